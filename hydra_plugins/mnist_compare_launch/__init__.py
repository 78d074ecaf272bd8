"""A sweep's jobs composed once: Hydra's basic sweeper and joblib launcher, minus two compositions.

Without this package Hydra composes each job of a sweep three times: our pre-launch check
(`mnist_compare/run/preflight.py`) to check it, the basic sweeper to validate it, the joblib
launcher's worker to run it, about 80 ms each (docs/study.md, Performance). The check composes
exactly as the other two would (`load_sweep_config` of the same master config and overrides, or a
copy of such a composition where jobs differ only in values: `mnist_compare/run/compose.py`) and
keeps the result, so these two subclasses use it: `hydra/sweeper=checked` skips the validation of jobs
the check composed, `hydra/launcher=parallel` sends each worker its job's config instead of
composing it there. A job the check did not compose (another sweeper's, e.g. Optuna's trials) is
composed as before. The launcher's worker processes are started by the check itself
(`plugins.start_workers`), so that their imports (about 5 s) overlap it rather than follow it,
and are killed once the sweep's results are in (`stop_workers`), not left to shut down one by one.
The jobs of an MLP cell (seeds apart) go to one worker together, which trains their seeds as
one batched model before running each job (`plugins.seed_cells`, `mnist_compare/run/fused.py`).
Before each job a worker freezes what it holds out of Python's cyclic collector
(`plugins.keep_collections_short`), so loky's collection after each job stays short, and a
Ctrl-C caught in a finalizer there stops the job (`plugins.between_tasks`).

Hydra 1.3 finds plugins by scanning this namespace package, which an editable install
(`pip install -e .`) hides from the scan outside the checkout, so `mnist_compare.train` registers
both classes (`register`). The scan imports the modules here in any Hydra app of the environment,
so they import nothing heavy at the top.
"""

from __future__ import annotations

import sys


def register() -> None:
    """Make both classes known to Hydra whether or not its scan found this package."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # the scan first: it re-imports the base classes' modules
    from hydra_plugins.mnist_compare_launch.plugins import CheckedSweeper, ParallelLauncher

    for plugin in (CheckedSweeper, ParallelLauncher):
        plugins.register(plugin)


def stop_workers() -> None:
    """End the parallel launcher's workers, if this process started any (`plugins.stop_workers`)."""
    plugins = sys.modules.get(f"{__name__}.plugins")
    if plugins is not None:
        plugins.stop_workers()
