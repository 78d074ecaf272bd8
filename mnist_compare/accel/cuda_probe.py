"""The CUDA availability probe that PyTorch's Adam makes on every step, kept cheap on the CPU."""

from __future__ import annotations

import os

import torch

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def skip_nvml_probe() -> bool:
    """Drop Lightning's `PYTORCH_NVML_BASED_CUDA_CHECK=1` where no CUDA device is visible.

    Lightning sets it on import, so that asking whether CUDA is there does not initialise CUDA in
    a process that may fork. With it, `torch.cuda.is_available()` loads NVML afresh on each call,
    and Adam asks on every step: where there is no NVML (this CPU VM) a failed `dlopen` and then
    the CUDA runtime's count anyway: 0.14-0.7 ms a step, 4-14% of an MLP run
    (mnist_compare/accel/README.md). With no device visible, the runtime's count (0, cached after
    the first call) is all the probe can say, and there is no CUDA state a fork could spoil, so
    dropping the variable changes nothing but the cost. Where a device is visible it is kept.
    Returns whether it was dropped."""
    if os.environ.get(NVML_CHECK) != "1" or torch.cuda.is_available():
        return False
    del os.environ[NVML_CHECK]
    return True
