"""Hydra entry point: one job = one (arch, ws, aux, seed) training run, written to metrics.json.

    python -m mnist_compare.train -m arch=shallow,deep,conv ws=true,false aux=0,0.5 'seed=range(10)'
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_compare.errors import UserError
from mnist_compare.results import FAILURE, METRICS, read_json, summarise, write_json

log = logging.getLogger("mnist_compare")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Settings that cannot change a run's numbers: a finished job made under other values is reused.
NEUTRAL_KEYS = ("threads", "data.data_dir", "trainer.enable_progress_bar")


def check_config(cfg: DictConfig) -> None:
    """Top-level knobs; the data module and model check their own arguments."""
    if not isinstance(cfg.ws, bool):
        raise UserError(f"ws={cfg.ws!r} is not allowed: use ws=true or ws=false")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise UserError(f"seed={cfg.seed!r} is not allowed: use an integer >= 0, e.g. seed=0 or 'seed=range(10)'")
    epochs = cfg.trainer.get("max_epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UserError(
            f"trainer.max_epochs={epochs!r} is not allowed: use an integer >= 1, e.g. trainer.max_epochs=50"
        )
    monitored = [c.monitor for c in (cfg.get("callbacks") or {}).values() if c and c.get("monitor")]
    if any(m.startswith("val/") for m in monitored) and not cfg.data.get("val_pairs"):
        raise UserError(
            f"callbacks monitor {monitored[0]} but data.val_pairs={cfg.data.get('val_pairs')}: "
            "hold out validation pairs, e.g. data.val_pairs=200"
        )
    threads = cfg.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserError(f"threads={threads!r} is not allowed: use null or an integer >= 1, e.g. threads=1")


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the settings that cannot change results."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    for dotted in NEUTRAL_KEYS:
        *parents, leaf = dotted.split(".")
        node = plain
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return plain


def finished(out_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The finished result already in `out_dir` for this config (a resumed sweep), if any."""
    done = read_json(out_dir / METRICS)
    if done is None:
        return None
    if done.get("config") != config:
        raise UserError(
            f"{out_dir / METRICS} holds a finished run of another config; "
            "give this sweep its own hydra.sweep.dir=... rather than overwrite it"
        )
    return done


def threads_per_job(cfg: DictConfig) -> int | None:
    """`threads`, else under the joblib launcher the cores divided among its parallel jobs (two
    jobs with one thread each beat one job with two on these small nets), else torch's default."""
    if cfg.get("threads"):
        return int(cfg.threads)
    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # not run by Hydra (tests, benchmarks)
        return None
    launcher = hydra_cfg.launcher
    if hydra_cfg.mode != RunMode.MULTIRUN or "joblib" not in str(launcher.get("_target_", "")).lower():
        return None
    cores = os.cpu_count() or 1
    jobs = launcher.n_jobs if launcher.n_jobs > 0 else cores
    return max(1, cores // jobs)


def quiet_lightning() -> None:
    """Keep a sweep's console to one line per job: Lightning's banners say the same every run."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(treespec|LeafSpec|does not have many workers).*")


def fit(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Build everything from the config, train, and return the metrics.json record."""
    quiet_lightning()
    if threads := threads_per_job(cfg):
        torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, verbose=False)  # the seed also fixes the pairs, through the data module
    model = instantiate(cfg.model, _recursive_=False)
    datamodule = instantiate(cfg.data)
    logger = instantiate(cfg.logger, save_dir=str(out_dir)) if cfg.get("logger") else False
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=str(out_dir))
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    train_time = time.perf_counter() - started
    if trainer.interrupted:
        raise KeyboardInterrupt
    chooser = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), None)
    if chooser is not None:  # deliver the checkpoint chosen on validation pairs, scored on the test pairs
        trainer.test(model, datamodule=datamodule, ckpt_path=chooser.best_model_path, verbose=False)
    record: dict[str, Any] = {
        "status": "finished",
        "arch": cfg.arch.name,
        "ws": cfg.ws,
        "aux": float(cfg.aux),
        "seed": cfg.seed,
        "n_params": sum(p.numel() for p in model.parameters()),
        "max_epochs": 1 if cfg.trainer.get("fast_dev_run") else cfg.trainer.max_epochs,
        "stopped_early": trainer.current_epoch < cfg.trainer.max_epochs and not cfg.trainer.get("fast_dev_run"),
        **summarise(model.history, (chooser.monitor, chooser.mode) if chooser else None),
        "train_time_s": round(train_time, 3),
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    return record


def user_error(e: BaseException) -> UserError | None:
    """The UserError behind `e`, also when Hydra's instantiate wrapped it."""
    while e is not None and not isinstance(e, UserError):
        e = e.__cause__ or e.__context__
    return e


def job_label(cfg: DictConfig) -> str:
    return f"arch={cfg.arch.name} ws={str(cfg.ws).lower()} aux={cfg.aux} seed={cfg.seed}"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the validation accuracy when there is a validation split (what a sweeper such as
    Optuna optimises), never a test figure."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_config(cfg)
        config = result_config(cfg)
        if (done := finished(out_dir, config)) is not None:
            log.info("%s: already finished in %s, skipped", job_label(cfg), out_dir)
            return done.get("val_acc")
        plan = "fast_dev_run" if cfg.trainer.get("fast_dev_run") else f"{cfg.trainer.max_epochs} epochs"
        log.info("%s: training %s -> %s", job_label(cfg), plan, out_dir)
        record = fit(cfg, out_dir)
    except Exception as e:
        if bad_input := user_error(e):
            print(f"error: {bad_input}", file=sys.stderr)
            raise SystemExit(2) from None
        # A failed job leaves its record and lets the sweep's other jobs run (Hydra re-raises
        # the first failure when the sweep ends, so the exit status is non-zero).
        write_json(out_dir / FAILURE, {
            "status": "failed", "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(), "config": OmegaConf.to_container(cfg, resolve=True),
        })
        log.error("%s: FAILED (%s: %s); see %s", job_label(cfg), type(e).__name__, e, out_dir / FAILURE)
        raise
    record["config"] = config
    record["overrides"] = list(HydraConfig.get().overrides.task)
    write_json(out_dir / METRICS, record)
    (out_dir / FAILURE).unlink(missing_ok=True)
    log.info(
        "%s: test_acc %.4f (%s of %d; best epoch on test %.4f, for comparison only) in %.1f s",
        job_label(cfg), record["test_acc"], record["selection"], record["epochs"], record["best_test_acc"],
        record["train_time_s"],
    )
    return record.get("val_acc")


def cli() -> None:
    """Check `arch=` before Hydra composes, so that a typo is one line, not a config dump."""
    known = sorted(p.stem for p in (CONF_DIR / "arch").glob("*.yaml"))
    for arg in sys.argv[1:]:
        if arg.startswith("arch="):
            for name in arg.removeprefix("arch=").split(","):
                if name not in known:
                    print(f"error: arch={name} is unknown: use one of {', '.join(known)} (conf/arch/*.yaml)",
                          file=sys.stderr)
                    raise SystemExit(2)
    main()


if __name__ == "__main__":
    cli()
