"""The task: one job = one training run (compose -> fit -> record), written to its folder's metrics.json.

    python -m mnist_compare.train -m arch=shallow,deep,conv ws=true,false aux=0,0.5 'seed=range(10)'

Every job's settings are checked before anything runs (`run/preflight.py`); a job whose run
(same resolved config) is already finished is skipped, so re-running a sweep resumes it. The
command around the task (arguments, signals, exit codes, Hydra plugins) is `mnist_compare/cli.py`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_compare.paths import CONF_DIR
from mnist_compare.results import FAILURE, METRICS, write_json
from mnist_compare.run import cluster, label, progress
from mnist_compare.run.fit import fit, replay
from mnist_compare.run.identity import group_id, identity_config, run_id
from mnist_compare.run.outcome import mark
from mnist_compare.run.provenance import code_version, launched_code, library_versions, machine, same_code
from mnist_compare.run.resume import already_done, start_clean

log = logging.getLogger("mnist_compare")


def job_label(cfg: DictConfig) -> str:
    hydra_cfg = HydraConfig.get()
    return label.job_label(cfg, hydra_cfg.runtime.choices.get("arch"), list(hydra_cfg.overrides.task))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig, trained: dict[str, Any] | None = None) -> float | None:
    """Returns the validation accuracy when there is a validation split (what a sweeper such as
    Optuna optimises), never a test figure. `trained`: what this run's seed measured, trained
    with the other seeds of its cell (`mnist_compare/accel/fused.py`), from the launcher."""
    try:
        return run(cfg, trained)
    except BaseException as e:  # the command's closing line says which run or sweep it ended
        with contextlib.suppress(Exception):  # never in the way of the exception itself
            hydra = HydraConfig.get()
            if hydra.mode == RunMode.MULTIRUN:
                total = json.loads(os.environ.get(progress.ENV) or "{}").get("total")
                mark(e, "multirun", Path(hydra.sweep.dir), total)
            else:
                mark(e, "run", Path(hydra.runtime.output_dir), 1)
        raise


def run(cfg: DictConfig, trained: dict[str, Any] | None = None) -> float | None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    config = identity_config(cfg)
    rid = run_id(config)
    if (done := already_done(job_label(cfg), out_dir, rid)) is not None:
        if (out_dir / METRICS).exists():
            log.info("%s: already finished in %s, skipped", job_label(cfg), out_dir)
        return done.get("val_acc")
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
        waiting = trained.get("waiting", 0) if trained else 0  # the cell's seeds still to record
        sweep = progress.line(Path(HydraConfig.get().sweep.dir), waiting=waiting) \
            if HydraConfig.get().mode == RunMode.MULTIRUN else ""
        share = " (its share of the batch)" if trained else ""
        log.info("%s: test_acc %.4f (%s, epoch %d of %d%s) in %.1f s%s%s", job_label(cfg), record["test_acc"],
                 record["selection"], record["delivered_epoch"], record["epochs"], best, record["train_time_s"],
                 share, sweep)
        return record.get("val_acc")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


if __name__ == "__main__":
    from mnist_compare.cli import cli

    cli(main)
