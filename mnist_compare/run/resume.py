"""Resume: skip a run already finished in the sweep, and start an unfinished one clean."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnist_compare.errors import UserError
from mnist_compare.results import DUPLICATE, FAILURE, METRICS, read_json, write_json
from mnist_compare.run import cluster
from mnist_compare.run.identity import finished_runs, identity_config, run_id

log = logging.getLogger("mnist_compare")
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def attempts_in(out_dir: Path) -> set[str]:
    """The run_ids of the runs whose attempts `out_dir` holds, from what a run writes there first
    (`.hydra/config.yaml`) or last (`failure.json`, also a SLURM job's record of its stop; `metrics.json`)."""
    found, configs = set(), []
    for name in (FAILURE, METRICS):
        record = read_json(out_dir / name) or {}
        if isinstance(record.get("run_id"), str):
            found.add(record["run_id"])
        elif isinstance(record.get("config"), dict):
            configs.append(record["config"])
    with contextlib.suppress(Exception):
        configs.append(OmegaConf.load(out_dir / ".hydra" / "config.yaml"))
    for config in configs:
        with contextlib.suppress(Exception):  # not a config of this program
            found.add(run_id(identity_config(OmegaConf.create(config))))
    return found


def not_ours(out_dir: Path, rid: str) -> None:
    """Refuses (UserError) a non-empty folder that holds no earlier attempt of this run: its
    files are the user's (or another run's), and a run deletes only what it wrote itself."""
    if not out_dir.is_dir():
        return
    found = sorted(p.name for p in out_dir.iterdir())
    if not found or found == [DUPLICATE] or rid in attempts_in(out_dir):
        return
    listed = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    raise UserError(f"{out_dir} is not empty ({listed}) and holds no earlier attempt of this run: nothing was "
                    "touched; give the run a new or empty folder (hydra.run.dir=... or hydra.sweep.dir=...)")


def start_clean(cfg: DictConfig, out_dir: Path, trains: bool = True, rid: str | None = None) -> logging.Handler:
    """A (re)started job begins with an empty log: what an unfinished attempt left (TensorBoard
    events, checkpoints, a failure record) would overlap the new one. Hydra's own record of the
    job (`.hydra/`) is written here, by a job that trains, so finished jobs are never touched.
    `trains=False`: the job writes what its seed measured in a batched cell, from the start.
    `rid`: the run's id; a folder holding files of anything else is refused, nothing deleted."""
    not_ours(out_dir, rid if rid is not None else run_id(identity_config(cfg)))
    if trains and cluster.resumable(cfg, out_dir):  # it continues from its last.ckpt, which rewrites its log
        shutil.rmtree(out_dir / ".hydra", ignore_errors=True)
        (out_dir / FAILURE).unlink(missing_ok=True)
    else:
        for stale in ("tb", "checkpoints", ".hydra"):
            shutil.rmtree(out_dir / stale, ignore_errors=True)
        for stale in (FAILURE, DUPLICATE, "train.log", cluster.LAST):
            (out_dir / stale).unlink(missing_ok=True)
    hydra_cfg = HydraConfig.get()
    (out_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, out_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), out_dir / ".hydra" / "hydra.yaml")
    OmegaConf.save(list(hydra_cfg.overrides.task), out_dir / ".hydra" / "overrides.yaml")
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return handler


def already_done(label: str, out_dir: Path, rid: str) -> dict[str, Any] | None:
    """The finished record of this run: in its own folder, or (a sweep resumed with another
    spelling, e.g. an explicit default) in another folder of the same sweep. A folder holding a
    finished run of another config (a reused search folder, a hand-made run.dir) is never
    overwritten."""
    own = read_json(out_dir / METRICS)
    if own and own.get("run_id") == rid:
        return own
    if own and own.get("status") == "finished":
        raise UserError(f"{out_dir} holds a finished run of another config: give this launch its own "
                        "hydra.sweep.dir=... (or hydra.run.dir=...) rather than overwrite it")
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    other = finished_runs(Path(HydraConfig.get().sweep.dir)).get(rid)
    if other is None:
        return None
    folder, record = other
    if not any(out_dir.iterdir()):
        out_dir.rmdir()  # nothing of ours was written: leave no empty job folder behind
    else:
        write_json(out_dir / DUPLICATE, {"status": "duplicate", "of": str(folder)})
    log.info("%s: same run as %s (already finished), skipped", label, folder)
    return record
