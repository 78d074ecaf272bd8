"""How the collector's tables spell numbers: a dash for a figure that does not exist, never nan."""

from __future__ import annotations

import math
from typing import Any

from mnist_compare.collect.stats import TOLERANCE

DASH = "—"


def num(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return format(value, spec)


def pm(mean: float, std: float) -> str:
    """mean ± std; a std of 0 is said in words, one that does not exist (n = 1) is left out."""
    if not math.isfinite(mean):
        return DASH
    if not math.isfinite(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} (no variance)" if std <= TOLERANCE else f"{mean:.4f} ± {std:.4f}"
