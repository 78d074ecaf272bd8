"""Build one run from its config, train it, and turn what it measured into its record."""

from __future__ import annotations

import logging
import math
import platform
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from mnist_compare.models.module import CompareModule
from mnist_compare.run import cluster
from mnist_compare.run.identity import flatten


def quiet_lightning() -> None:
    """Keep a sweep's console to one line per job: Lightning's banners say the same every run,
    and its `srun` hint (printed wherever SLURM is installed) does not apply to one-process jobs."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(treespec|LeafSpec|does not have many workers|`srun`).*")


def build_trainer(cfg: DictConfig, out_dir: Path | None) -> tuple[pl.Trainer, list[pl.Callback]]:
    """The Trainer with the config's logger and callbacks; checkpointing is switched on exactly
    when a checkpoint callback asks for it (Lightning refuses the pair otherwise)."""
    logger = build_logger(cfg, out_dir) if out_dir else None
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks) or bool(
        cfg.trainer.get("enable_checkpointing"))
    trainer = instantiate(cfg.trainer, logger=logger or False, callbacks=callbacks, enable_checkpointing=checkpointing,
                          default_root_dir=str(out_dir) if out_dir else None)
    return trainer, callbacks


def build_logger(cfg: DictConfig, out_dir: Path) -> Any:
    """The config's logger writing into the run's folder, or None (`logger=null`)."""
    return instantiate(cfg.logger, save_dir=str(out_dir)) if cfg.get("logger") else None


def fit(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Train; return the record's measured part (metrics.json adds identity and provenance)."""
    quiet_lightning()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(cfg.seed, verbose=False)  # the seed also fixes the pairs, through the data module
    model: CompareModule = instantiate(cfg.model, _recursive_=False)
    datamodule = instantiate(cfg.data)
    trainer, _ = build_trainer(cfg, out_dir)
    ckpt_path = cluster.resume_point(trainer, cfg, out_dir)  # a run stopped on the way continues
    started = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit as e:  # Lightning turns Ctrl-C into exit(1) after its graceful shutdown
        if isinstance(e, cluster.JobStopped):  # SLURM stopped the job; its record is written
            raise
        if trainer.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # it also ignores further Ctrl-C
            raise KeyboardInterrupt from None
        raise
    train_time = time.perf_counter() - started + cluster.earlier_train_time_s(trainer)
    if trainer.interrupted:
        raise KeyboardInterrupt
    chooser = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)), None)
    epochs = len(model.history.get("train/loss", []))
    delivered, selection = epochs, "last epoch"
    if datamodule.val_pairs:  # the test pairs, unseen so far, are scored once on the delivered model
        ckpt = chooser.best_model_path if chooser is not None and chooser.best_model_path else None
        if ckpt:
            delivered = int(torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]) + 1
            selection = f"checkpoint with {chooser.mode} {chooser.monitor}"
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    # where it trained: Lightning's teardown has moved the module back to the CPU by now
    record = measured_record(cfg, sum(p.numel() for p in model.parameters()), model.history, model.final, epochs,
                             delivered, selection, train_time, str(trainer.strategy.root_device))
    close_log(trainer.logger, cfg, record, model.final, delivered)
    return record


def replay(cfg: DictConfig, out_dir: Path, trained: dict[str, Any]) -> dict[str, Any]:
    """What `fit` returns and logs, for a seed trained with its cell (`accel/fused.py`): the
    logger gets the same figures in the same order, after the cell's training rather than during it."""
    logger = build_logger(cfg, out_dir)
    history = trained["history"]
    epochs = len(history["train/loss"])
    if logger is not None:
        logger.log_hyperparams(trained["hparams"])  # as Lightning does when a fit starts
        logger.save()
        stages = dict.fromkeys(k.split("/")[0] for k in history)  # in the order a solo run records them
        for epoch in range(epochs):
            for stage in stages:
                logger.log_metrics({k: v[epoch] for k, v in history.items() if k.startswith(f"{stage}/")},
                                   step=epoch + 1)
        logger.finalize("success")  # as Lightning does when a fit ends
    record = measured_record(cfg, trained["n_params"], history, {}, epochs, epochs, "last epoch",
                             trained["train_time_s"], "cpu")
    close_log(logger, cfg, record, {}, epochs)
    return record


class NonFiniteRun(Exception):
    """A model whose figures are not finite (it diverged): a failed run, never a finished one."""


def nonfinite(record: dict[str, Any]) -> list[str]:
    """The figures of a record that are NaN or infinite (`history.train_loss` for a curve)."""
    def bad(v: Any) -> bool:
        return isinstance(v, float) and not math.isfinite(v)

    found = [k for k, v in record.items() if bad(v)]
    found += [f"history.{k}" for k, v in (record.get("history") or {}).items() if any(bad(x) for x in v)]
    return found


def measured_record(cfg: DictConfig, n_params: int, history: dict[str, list[float]],
                    final: dict[str, dict[str, float]], epochs: int, delivered: int, selection: str,
                    train_time: float, device: str) -> dict[str, Any]:
    """Raises NonFiniteRun where a figure is NaN or infinite: its accuracies would enter the
    tables as if the model had trained."""
    record = _measured(cfg, n_params, history, final, epochs, delivered, selection, train_time, device)
    if bad := nonfinite(record):
        raise NonFiniteRun(f"non-finite figures ({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}): the model "
                           "diverged; try a smaller model.optimizer.lr")
    return record


def _measured(cfg: DictConfig, n_params: int, history: dict[str, list[float]],
              final: dict[str, dict[str, float]], epochs: int, delivered: int, selection: str,
              train_time: float, device: str) -> dict[str, Any]:
    return {
        "n_params": n_params,
        "max_epochs": 1 if cfg.trainer.get("fast_dev_run") else cfg.trainer.max_epochs,
        "epochs": epochs,
        "stopped_early": epochs < cfg.trainer.max_epochs and not cfg.trainer.get("fast_dev_run"),
        "selection": selection,
        "delivered_epoch": delivered,
        **figures(history, final),
        "train_time_s": round(train_time, 3),
        "device": device,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }


def close_log(logger: Any, cfg: DictConfig, record: dict[str, Any], final: dict[str, dict[str, float]],
              delivered: int) -> None:
    if logger is None:
        return
    if final:  # the once-scored test figures, at the delivered epoch
        logger.log_metrics({f"test/{k}": v for k, v in final["test"].items()}, step=delivered)
    # TensorBoard's HPARAMS tab: settings beside the delivered figures
    settings = flatten(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    logger.log_hyperparams(
        {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in settings.items()},
        {f"hp/{k}": record[k] for k in ("test_acc", "val_acc") if k in record},
    )
    # Lightning closed the log after training; the figures above reopened it. Close it again,
    # or its writer thread lives on in a sweep's worker and flushes into the folder later.
    logger.finalize("success")


def figures(history: dict[str, list[float]], final: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The delivered model's figures. Without validation pairs (the report's protocol) the test
    pairs were evaluated after every epoch: the last epoch is delivered, and the best epoch on
    the test pairs is kept apart, for comparison with the report only. With validation pairs the
    test pairs were scored once (`final`), and no per-epoch test figure exists."""
    out: dict[str, Any] = {}
    for key, values in history.items():
        if values:
            out[key.replace("/", "_")] = values[-1]
    for stage, values in final.items():
        out.update({f"{stage}_{k}": v for k, v in values.items()})
    test_acc = history.get("test/acc", [])
    if test_acc and not final:
        best = max(range(len(test_acc)), key=test_acc.__getitem__)
        out["best_test_acc"], out["best_epoch"] = test_acc[best], best + 1
    out["history"] = {k.replace("/", "_"): v for k, v in history.items()}
    return out
