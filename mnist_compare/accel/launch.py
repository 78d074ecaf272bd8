"""The parallel launcher's speed-only work, in the workers: an MLP cell's jobs trained together
as one batched model (`fused.py`), each job run with the config the checked sweeper composed for
it, and a worker's garbage collections kept short. `hydra_plugins/mnist_compare_launch` holds the
plugin classes (Hydra's public `Sweeper` and `Launcher`), which call these; with `accel=false`
Hydra's own joblib launcher runs every job instead.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

FREEZE_ABOVE = 15_000  # unfrozen objects worth freezing: a job leaves 5,000-10,000, the imports ~470,000

Job = tuple[int, Sequence[str], DictConfig | None]


def seed_cells(jobs: list[Job], joblib_cfg: dict[str, Any],
               group_ids: dict[tuple[str, ...], str] | None = None) -> list[list[Job]]:
    """The jobs as tasks: the runs of an MLP cell that differ only by their seed go to one worker
    together, which trains them as one batched model (mnist_compare/accel/fused.py); every other
    job is a task of its own, in the jobs' order. A cell holds `MAX_SEEDS` seeds at most, and
    fewer where the sweep would otherwise have less than two tasks per worker. `group_ids`: the
    runs' group_ids by job overrides, where the checked sweeper has them (else computed here)."""
    from joblib import effective_n_jobs

    from mnist_compare.accel.fused import MAX_SEEDS, fusable, plain_mlps
    from mnist_compare.run.identity import group_id, identity_config

    groups: dict[str, list[Job]] = {}
    batchable: dict[str, bool] = {}
    order: list[str | Job] = []  # a group's key where its first job was, or a job of its own
    for job in jobs:
        cfg = job[2]
        try:
            key = None if cfg is None or not fusable(cfg) else \
                (group_ids or {}).get(tuple(job[1])) or group_id(identity_config(cfg))
        except Exception:  # a setting `fusable` cannot read: the job trains alone, and says what is wrong
            key = None
        if key is not None and key not in batchable:
            batchable[key] = plain_mlps(cfg)  # type: ignore[arg-type]
        if key is None or not batchable[key]:
            order.append(job)
        elif key in groups:
            groups[key].append(job)
        else:
            groups[key] = [job]
            order.append(key)
    workers = effective_n_jobs(joblib_cfg.get("n_jobs", -1))
    size = next((n for n in range(MAX_SEEDS, 1, -1)
                 if len(order) - len(groups) + sum(-(-len(g) // n) for g in groups.values()) >= 2 * workers), 1)
    tasks: list[list[Job]] = []
    for item in order:
        if isinstance(item, str):
            group = groups[item]
            parts = -(-len(group) // size)  # as many cells as `size` needs, of near-equal sizes, in order
            tasks += [group[len(group) * k // parts : len(group) * (k + 1) // parts] for k in range(parts)]
        else:
            tasks.append([item])
    return tasks


def sweep_statement() -> dict[str, str]:
    """The environment the pre-launch check set for the jobs (the sweep's total and start, for
    each job's progress mark), which workers started before it did not inherit."""
    from mnist_compare.run.progress import ENV

    return {ENV: os.environ[ENV]} if ENV in os.environ else {}


def between_tasks() -> None:
    """In a worker, before each task. A Ctrl-C reaches the workers too: one that lands in a
    finalizer (which the collection below may run) stops the task, as in the launching process
    (`cli`), rather than printing "Exception ignored" among the sweep's one line."""
    from mnist_compare.run.outcome import interrupt_not_lost

    sys.unraisablehook = interrupt_not_lost
    keep_collections_short()


def keep_collections_short() -> None:
    """Collect what the last job left, then, when much has survived, freeze it out of Python's
    cyclic collector.

    A loky worker without psutil runs a full `gc.collect()` after a task whenever a second has
    passed since its last one, to bound leaks; with torch, Lightning and Hydra imported that
    scanned some 470,000 objects, about 250 ms after each job, while a job's own garbage is a few
    thousand objects. Frozen objects are still freed by reference counting, but reference cycles
    among them never are, and a job's unpickled configs are such cycles (OmegaConf's parent
    links): so only a large set of survivors is frozen (the imports, what the first jobs import
    lazily), never each job's leftovers, and later collections scan the few thousand objects a
    job makes (mnist_compare/accel/README.md)."""
    gc.collect()
    if len(gc.get_objects()) > FREEZE_ABOVE:  # the objects the collector tracks and would scan
        gc.freeze()


def execute_cell(cell: list[Job], sweep_dir: Path, hydra_context: HydraContext, config: DictConfig,
                 task_function: TaskFunction, singleton_state: dict[Any, Any], sweep: dict[str, str],
                 launcher_pid: int) -> list[JobReturn]:
    """In the worker: the cell's seeds trained together, then each job as `execute_job`, which
    writes the record of what its seed measured (handed to the task as its `trained`)."""
    from mnist_compare.accel.fused import train_cell
    from mnist_compare.run.identity import identity_config, run_id

    if os.getpid() != launcher_pid:
        between_tasks()
    measured = train_cell([cfg for _, _, cfg in cell if cfg is not None], sweep_dir)
    rids = [run_id(identity_config(cfg)) if cfg is not None else None for _, _, cfg in cell]
    returns = []
    for k, job in enumerate(cell):
        trained = measured.get(rids[k])  # type: ignore[arg-type]
        if trained is not None:  # the cell's seeds still to record after this one (its progress mark)
            trained = {**trained, "waiting": sum(r in measured for r in rids[k + 1:])}
        returns.append(execute_job(*job, hydra_context, config, task_function, singleton_state, sweep,
                                   launcher_pid, trained))
    return returns


def execute_job(idx: int, overrides: Sequence[str], composed: DictConfig | None, hydra_context: HydraContext,
                config: DictConfig, task_function: TaskFunction, singleton_state: dict[Any, Any],
                sweep: dict[str, str], launcher_pid: int, trained: dict[str, Any] | None = None) -> JobReturn:
    """In the worker: the joblib launcher's `execute_job`, with the job's config as composed and
    checked, and, for a seed of a batched cell, what it measured (the task's `trained`)."""
    os.environ.update(sweep)
    if os.getpid() != launcher_pid:  # a worker (joblib runs one job at a time in this process)
        between_tasks()
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = composed if composed is not None else \
        hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    task = task_function if trained is None else functools.partial(task_function, trained=trained)
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
