"""The checked sweeper and the parallel launcher, on Hydra's public `Sweeper` and `Launcher` bases.

`CheckedSweeper` (hydra/sweeper=checked): every combination of the sweep's values, as Hydra's
basic sweeper makes them; every job composed (`mnist_compare/accel/compose.py` with `accel`, else
as Hydra composes it) and checked (`run/preflight.check_sweep`) before any runs or any folder is
written; then the jobs go to the launcher with their configs (`ParallelLauncher.launch_checked`),
or, to any other launcher, as overrides (`Launcher.launch`).

`ParallelLauncher` (hydra/launcher=parallel): Hydra's joblib launcher's settings and processes.
With `accel` and jobs handed over by the checked sweeper, each worker gets its job's config as
composed, the jobs of an MLP cell (seeds apart) go to one worker together, which trains them as
one batched model (`mnist_compare/accel/fused.py`), and a worker keeps its garbage collections
short (`keep_collections_short`). Otherwise (`accel=false`, another sweeper's jobs) Hydra's own
`JoblibLauncher` runs them.

Hydra's plugin scan imports this module in any Hydra app of the environment: nothing heavy at the top.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)
FREEZE_ABOVE = 15_000  # unfrozen objects worth freezing: a job leaves 5,000-10,000, the imports ~470,000

Job = tuple[int, Sequence[str], DictConfig | None]
Checked = tuple[list[str], DictConfig, str]  # a job's overrides, config and group_id


class CheckedSweeper(Sweeper):
    """Every combination of the values, each job composed and checked before any runs."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        self.params = params or {}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from mnist_compare import accel
        from mnist_compare.accel.compose import compose_jobs
        from mnist_compare.run.outcome import mark
        from mnist_compare.run.preflight import check_accel, check_sweep, expand

        assert self.config is not None and self.hydra_context is not None and self.launcher is not None
        config, loader = self.config, self.hydra_context.config_loader
        sweep_dir = Path(config.hydra.sweep.dir)  # fixes `${now:...}` before any job is composed
        check_accel(config)
        if accel.enabled(config):
            compose = functools.partial(compose_jobs, loader, config)
        else:  # as Hydra composes a job
            def compose(jobs: list[list[str]]) -> list[DictConfig]:
                return [loader.load_sweep_config(config, list(job)) for job in jobs]
        checked = check_sweep(config, expand([f"{k}={v}" for k, v in self.params.items()] + list(arguments)),
                              True, compose)
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper
            if accel.enabled(config) and isinstance(self.launcher, ParallelLauncher):
                returns = self.launcher.launch_checked(checked, initial_job_idx=0)
            else:
                returns = self.launcher.launch([job for job, _, _ in checked], initial_job_idx=0)
            for ret in returns:
                _ = ret.return_value  # a failed job's exception, raised here
        except BaseException as e:  # the command's closing line says which sweep it ended
            mark(e, "multirun", sweep_dir, len(checked))
            raise
        return [returns]


def joblib_settings(launcher: dict[str, Any]) -> dict[str, Any]:
    """`joblib.Parallel`'s arguments from the launcher's settings, as Hydra's joblib launcher makes them."""
    settings = {k: v for k, v in launcher.items() if k != "_target_"}
    settings["backend"] = "loky"  # as the joblib launcher: threads do not mix with Hydra's globals
    for key in ("pre_dispatch", "batch_size", "max_nbytes"):
        with contextlib.suppress(TypeError, ValueError):
            if settings.get(key):
                settings[key] = int(settings[key])
    return settings


class ParallelLauncher(Launcher):
    """Hydra's joblib launcher; the checked sweeper's jobs with their configs, MLP cells batched."""

    def __init__(self, **joblib: Any) -> None:
        self.joblib = joblib
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Jobs given as overrides only (another sweeper's, `accel=false`): Hydra's own joblib launcher."""
        from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        stock = JoblibLauncher(**self.joblib)
        stock.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
        return stock.launch(job_overrides, initial_job_idx)

    def launch_checked(self, checked: list[Checked], initial_job_idx: int) -> Sequence[JobReturn]:
        """The checked sweeper's jobs, each with the config it composed and checked."""
        from joblib import Parallel, delayed

        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        joblib_cfg = joblib_settings(self.joblib)
        log.info("Joblib.Parallel(%s) is launching %d jobs", ",".join(f"{k}={v}" for k, v in joblib_cfg.items()),
                 len(checked))
        log.info("Launching jobs, sweep output dir : %s", sweep_dir)
        for idx, (overrides, _, _) in enumerate(checked):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        jobs: list[Job] = [(initial_job_idx + idx, overrides, cfg) for idx, (overrides, cfg, _) in enumerate(checked)]
        tasks = seed_cells(jobs, joblib_cfg, {tuple(overrides): gid for overrides, _, gid in checked})
        context = (self.hydra_context, self.config, self.task_function, Singleton.get_state(), sweep_statement(),
                   os.getpid())
        runs = Parallel(**joblib_cfg)(
            delayed(execute_job)(*task[0], *context) if len(task) == 1 else
            delayed(execute_cell)(task, sweep_dir, *context)
            for task in tasks
        )
        assert isinstance(runs, list)
        by_idx = {job[0]: ret for task, done in zip(tasks, runs, strict=True)
                  for job, ret in zip(task, done if len(task) > 1 else [done], strict=True)}
        assert all(isinstance(r, JobReturn) for r in by_idx.values())
        return [by_idx[idx] for idx, _, _ in jobs]  # in the order of the jobs


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
