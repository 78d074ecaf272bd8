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
short; the workers' side of all this is `mnist_compare/accel/launch.py`. Otherwise (`accel=false`,
another sweeper's jobs) Hydra's own `JoblibLauncher` runs them.

Hydra's plugin scan imports this module in any Hydra app of the environment: nothing heavy at the top.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

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

        from mnist_compare.accel.launch import Job, execute_cell, execute_job, seed_cells, sweep_statement

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
