"""The project's sweeper and launcher as Hydra plugins (`plugins.py`): `hydra/sweeper=checked`
composes and checks every job of a sweep before any runs and hands the jobs with their configs to
`hydra/launcher=parallel`, whose speed-ups are those of `mnist_compare/accel` (`accel=false`: none).

Hydra 1.3 finds plugins by scanning this namespace package, which an editable install
(`pip install -e .`) hides from the scan outside the checkout, so the command
(`mnist_compare/cli.py`) registers both classes (`register`). The scan imports the modules here
in any Hydra app of the environment, so they import nothing heavy at the top.
"""

from __future__ import annotations


def register() -> None:
    """Make both classes known to Hydra whether or not its scan found this package."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # the scan first
    from hydra_plugins.mnist_compare_launch.plugins import CheckedSweeper, ParallelLauncher

    for plugin in (CheckedSweeper, ParallelLauncher):
        plugins.register(plugin)
