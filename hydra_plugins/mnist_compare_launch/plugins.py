"""The checked sweeper and the parallel launcher (see the package's docstring).

Hydra's plugin scan re-imports the modules of the plugins it finds, Hydra's own included, and a
subclass of a class it has since replaced fails in the base class's `super(Base, self)` (as
BasicSweeper's `__init__` does). So this module is imported during the scan (where the scan finds
this package: a plain install, or the checkout as working folder), after Hydra's own core plugins,
or by `register` after the scan; never before it.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)
# this process's parallel workers, when the pre-launch check started them: "warming" (their
# first tasks, the imports) and "executor" (loky's reusable executor they run in)
_WORKERS: dict[str, Any] = {}
FREEZE_ABOVE = 15_000  # unfrozen objects worth freezing: a job leaves 5,000-10,000, the imports ~470,000


def joblib_settings(launcher: dict[str, Any]) -> dict[str, Any]:
    """`joblib.Parallel`'s arguments from the launcher's settings, as Hydra's joblib launcher makes them."""
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    settings = {k: v for k, v in launcher.items() if k != "_target_"}
    settings["backend"] = "loky"  # as the joblib launcher: threads do not mix with Hydra's globals
    process_joblib_cfg(settings)
    return settings


def import_job_code() -> None:
    """A worker's first task: what every job imports (torch, Lightning: about 5 s), then the
    first full collection and freeze (`between_tasks`), both off the jobs' path."""
    import mnist_compare.train  # noqa: F401

    between_tasks()


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
    job makes (docs/study.md, Performance)."""
    gc.collect()
    if len(gc.get_objects()) > FREEZE_ABOVE:  # the objects the collector tracks and would scan
        gc.freeze()


def start_workers(launcher: dict[str, Any], jobs: int) -> None:
    """Start the launcher's worker processes and their imports now, before the pre-launch check
    composes and checks every job in this process (about 11 s for the Table-1 sweep), instead of
    after it: the two overlap. The launch reuses these workers (joblib's reusable executor, the
    same settings); a refused launch kills them (`stop_workers`). One job at a time runs in
    this process (joblib's sequential backend): nothing to start."""
    from joblib import Parallel, delayed, effective_n_jobs
    from joblib.externals.loky import get_reusable_executor

    settings = joblib_settings(launcher)
    workers = effective_n_jobs(settings.get("n_jobs", -1))
    if workers < 2 or jobs < 1:
        return
    warming = Parallel(**settings, return_as="generator_unordered")(
        delayed(import_job_code)() for _ in range(min(jobs, workers)))
    _WORKERS.update(warming=warming, executor=get_reusable_executor(reuse=True))  # the one just started


def stop_workers() -> None:
    """End the workers `start_workers` started, at once, whatever ended the command. After a
    sweep, loky would let each worker's interpreter shut down (some 1-3 s with torch loaded)
    before this process may exit; before the launch (a refused check), their first tasks are
    cancelled and joblib kills them. Never raises: it runs on the way out."""
    warming, executor = _WORKERS.pop("warming", None), _WORKERS.pop("executor", None)
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")  # joblib on the cancelled tasks, loky where `pgrep` is missing
        if warming is not None:
            warming.close()
        if executor is not None:
            executor.shutdown(wait=True, kill_workers=True)  # a no-op where joblib has killed them


def composed_by_check() -> dict[tuple[str, ...], DictConfig]:
    """Job overrides -> the config the pre-launch check composed for them. Imported when used:
    Hydra's scan may load this module a second time, which must not make a second store."""
    from mnist_compare.run.preflight import COMPOSED

    return COMPOSED


def group_ids_by_check() -> dict[tuple[str, ...], str]:
    """Job overrides -> the group_id of its run, as the pre-launch check found it."""
    from mnist_compare.run.preflight import GROUP_IDS

    return GROUP_IDS


class CheckedSweeper(BasicSweeper):
    """Hydra's basic sweeper; a job the pre-launch check has composed is not composed again."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        composed = composed_by_check()
        rest = [job for job in batch if tuple(job) not in composed]
        if rest:
            super().validate_batch_is_legal(rest)


class ParallelLauncher(JoblibLauncher):
    """Hydra's joblib launcher (same settings, same parallel processes); each job is sent with
    the config the pre-launch check composed, when there is one, and the jobs of an MLP cell
    (seeds apart) are sent together, to be trained as one batched model (`seed_cells`)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib import Parallel, delayed

        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        joblib_cfg = joblib_settings(self.joblib)
        log.info("Joblib.Parallel(%s) is launching %d jobs", ",".join(f"{k}={v}" for k, v in joblib_cfg.items()),
                 len(job_overrides))
        log.info("Launching jobs, sweep output dir : %s", sweep_dir)
        for idx, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        for _ in _WORKERS.pop("warming", None) or ():  # the workers started by the check are ready
            pass
        state = Singleton.get_state()
        composed = composed_by_check()
        sweep = sweep_statement()
        jobs = [(initial_job_idx + idx, overrides, composed.get(tuple(overrides)))
                for idx, overrides in enumerate(job_overrides)]
        tasks = seed_cells(jobs, joblib_cfg, group_ids_by_check())
        context = (self.hydra_context, self.config, self.task_function, state, sweep, os.getpid())
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


Job = tuple[int, Sequence[str], DictConfig | None]


def seed_cells(jobs: list[Job], joblib_cfg: dict[str, Any],
               group_ids: dict[tuple[str, ...], str] | None = None) -> list[list[Job]]:
    """The jobs as tasks: the runs of an MLP cell that differ only by their seed go to one worker
    together, which trains them as one batched model (mnist_compare/run/fused.py); every other
    job is a task of its own, in the jobs' order. A cell holds `MAX_SEEDS` seeds at most, and
    fewer where the sweep would otherwise have less than two tasks per worker. `group_ids`: the
    runs' group_ids by job overrides, where the pre-launch check has them (else computed here)."""
    from joblib import effective_n_jobs

    from mnist_compare.run.fused import MAX_SEEDS, fusable, plain_mlps
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


def execute_cell(cell: list[Job], sweep_dir: Path, hydra_context: HydraContext, config: DictConfig,
                 task_function: TaskFunction, singleton_state: dict[Any, Any], sweep: dict[str, str],
                 launcher_pid: int) -> list[JobReturn]:
    """In the worker: the cell's seeds trained together, then each job as `execute_job`, which
    writes the record of what its seed measured."""
    from mnist_compare.run.fused import TRAINED, train_cell

    if os.getpid() != launcher_pid:
        between_tasks()
    try:
        train_cell([cfg for _, _, cfg in cell if cfg is not None], sweep_dir)
        return [execute_job(*job, hydra_context, config, task_function, singleton_state, sweep, launcher_pid)
                for job in cell]
    finally:
        TRAINED.clear()  # what a job did not use (it failed before) is not left to a later task


def execute_job(idx: int, overrides: Sequence[str], composed: DictConfig | None, hydra_context: HydraContext,
                config: DictConfig, task_function: TaskFunction, singleton_state: dict[Any, Any],
                sweep: dict[str, str], launcher_pid: int) -> JobReturn:
    """In the worker: the joblib launcher's `execute_job`, with the job's config when given, and
    with the plugin registry of this worker's previous job: Hydra's `Singleton.set_state` leaves
    the registry out of the state and scans every plugin again otherwise, about 45 ms a job."""
    os.environ.update(sweep)
    if os.getpid() != launcher_pid:  # a worker (joblib runs one job at a time in this process)
        between_tasks()
    setup_globals()
    kept = Singleton._instances.get(Plugins)
    if kept is not None:
        singleton_state["instances"][Plugins] = kept
    Singleton.set_state(singleton_state)
    sweep_config = composed if composed is not None else \
        hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
