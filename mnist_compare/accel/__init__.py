"""Everything here exists for speed only: no number of any run depends on it.

The core (`models`, `data`, `run`, `train`, `collect`) never imports this package (tested:
tests/test_layers.py); Hydra reaches it through the configs (`hydra/sweeper=checked`,
`hydra/launcher=parallel`, the `accel` callback of conf/train.yaml), and the command
(`mnist_compare.cli`) through `hydra_plugins/mnist_compare_launch`. `accel=false` turns all of it
off: every job composed as Hydra composes it, run by Hydra's own joblib launcher, each run alone,
the process settings untouched. What each part gains: README.md beside this file.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def enabled(cfg: DictConfig) -> bool:
    """The `accel` switch of a config (true when absent); a bad value is refused by the pre-launch
    check (`run/preflight.py`) before this is asked."""
    return cfg.get("accel", True) is True


def process_settings(cfg: DictConfig | None = None) -> None:
    """The settings of a training process that change only its speed (`allocator`, `cuda_probe`)."""
    if cfg is not None and not enabled(cfg):
        return
    from mnist_compare.accel.allocator import keep_freed_memory
    from mnist_compare.accel.cuda_probe import skip_nvml_probe

    keep_freed_memory()
    skip_nvml_probe()


class ProcessSettings(Callback):
    """A Hydra callback (conf/train.yaml, `hydra.callbacks.accel`): before each job, in the process
    that runs it (the command, a sweep's worker, a SLURM job), `process_settings`."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        process_settings(config)
