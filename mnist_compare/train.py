"""Hydra entry point: one job = one training run, written to its folder's metrics.json.

    python -m mnist_compare.train -m arch=shallow,deep,conv ws=true,false aux=0,0.5 'seed=range(10)'

Every job's settings are checked before anything runs (`run/preflight.py`); a job whose run
(same resolved config) is already finished is skipped, so re-running a sweep resumes it.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hydra_plugins.mnist_compare_launch import register as register_plugins
from hydra_plugins.mnist_compare_launch import stop_workers
from mnist_compare.paths import CONF_DIR
from mnist_compare.results import FAILURE, METRICS, write_json
from mnist_compare.run import cluster, fused, progress
from mnist_compare.run.fit import fit, replay
from mnist_compare.run.identity import group_id, identity_config, run_id
from mnist_compare.run.outcome import interrupt_not_lost, report
from mnist_compare.run.preflight import LAUNCH
from mnist_compare.run.provenance import code_version, launched_code, library_versions, machine, same_code
from mnist_compare.run.resume import already_done, start_clean

log = logging.getLogger("mnist_compare")


def job_label(cfg: DictConfig) -> str:
    arch = HydraConfig.get().runtime.choices.get("arch")
    return f"arch={arch} ws={str(cfg.ws).lower()} aux={cfg.aux} seed={cfg.seed}"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the validation accuracy when there is a validation split (what a sweeper such as
    Optuna optimises), never a test figure."""
    try:
        return run(cfg)
    finally:
        if cluster.ends_its_process():  # nothing left to collect at its exit, as in `cli` below
            gc.freeze()


def run(cfg: DictConfig) -> float | None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    config = identity_config(cfg)
    rid = run_id(config)
    if (done := already_done(job_label(cfg), out_dir, rid)) is not None:
        if (out_dir / METRICS).exists():
            log.info("%s: already finished in %s, skipped", job_label(cfg), out_dir)
        return done.get("val_acc")
    trained = fused.TRAINED.pop(rid, None)  # trained just now with the other seeds of its cell
    code = code_version(config)  # as this process imported it; refused if edited since (nothing touched yet)
    same_code(code, launched_code())
    handler = start_clean(cfg, out_dir, trains=trained is None, rid=rid)
    try:
        epochs = "fast_dev_run" if cfg.trainer.get("fast_dev_run") else f"{cfg.trainer.max_epochs} epochs"
        how = f", batched with {trained['seeds'] - 1} other seed{'s' if trained['seeds'] > 2 else ''}" \
            if trained else ""
        log.info("%s: training %s%s -> %s", job_label(cfg), epochs.replace("1 epochs", "1 epoch"), how, out_dir)
        cluster.prepare_job(cfg, out_dir)  # on SLURM: threads, and what its signals mean
        try:
            measured = replay(cfg, out_dir, trained) if trained else fit(cfg, out_dir)
        except cluster.JobStopped:  # SLURM stopped it: the signal handler wrote its failure.json
            raise
        except BaseException as e:
            interrupted = isinstance(e, KeyboardInterrupt)
            write_json(out_dir / FAILURE, {
                "status": "interrupted" if interrupted else "failed", "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(), "config": config, "run_id": rid,
            })
            if not interrupted:
                log.error("%s: FAILED (%s: %s); see %s", job_label(cfg), type(e).__name__, e, out_dir / FAILURE)
            raise
        record = {
            "status": "finished", "arch": HydraConfig.get().runtime.choices.get("arch"), "ws": cfg.ws,
            "aux": float(cfg.aux), "seed": cfg.seed, **measured, "run_id": rid, "group_id": group_id(config),
            "code": code, "versions": library_versions(), **machine(), "config": config,
            "overrides": list(HydraConfig.get().overrides.task),
        }
        write_json(out_dir / METRICS, record)
        cluster.job_finished(out_dir)
        best = f"; best epoch on test {record['best_test_acc']:.4f}, for comparison only" \
            if "best_test_acc" in record else ""
        sweep = progress.line(Path(HydraConfig.get().sweep.dir), waiting=len(fused.TRAINED)) \
            if HydraConfig.get().mode == RunMode.MULTIRUN else ""
        share = " (its share of the batch)" if trained else ""
        log.info("%s: test_acc %.4f (%s, epoch %d of %d%s) in %.1f s%s%s", job_label(cfg), record["test_acc"],
                 record["selection"], record["delivered_epoch"], record["epochs"], best, record["train_time_s"],
                 share, sweep)
        return record.get("val_acc")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


# Config groups that may be switched off: `logger=null` reads as the group's `none` option
# (Hydra itself refuses null for a group), in single runs and sweeps (`logger=null,tensorboard`).
OPTIONAL_GROUPS = ("logger", "callbacks")


def _null_as_none(arg: str) -> str:
    key, _, value = arg.partition("=")
    if key.lstrip("+") not in OPTIONAL_GROUPS:
        return arg
    return f"{key}=" + ",".join("none" if v.strip() == "null" else v for v in value.split(","))


def cli() -> None:
    """Exceptions reach this process whole (HYDRA_FULL_ERROR) and are reported in one line:
    bad input exits 2, an interruption 130, a failed run 1."""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    LAUNCH["argv"] = sys.argv[1:]
    sys.argv[1:] = [_null_as_none(a) for a in sys.argv[1:]]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.unraisablehook = interrupt_not_lost
    register_plugins()  # hydra/sweeper=checked, hydra/launcher=parallel (conf/hydra)
    try:
        main()
    except BaseException as e:
        message, status = report(e)
        if message:
            print(message, file=sys.stderr)
        raise SystemExit(status) from None
    finally:  # a sweep's workers are killed rather than left to shut down one by one
        stop_workers()
        # The process ends here. Its ~460,000 objects (torch, Lightning, Hydra) are kept out of the
        # cyclic collections that the interpreter's shutdown runs, some 1.5 s of each command
        # (docs/study.md, Performance); atexit handlers, thread joins, flushes and reference
        # counting still run as before.
        gc.freeze()


if __name__ == "__main__":
    cli()
