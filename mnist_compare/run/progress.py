"""A sweep's progress, appended to each job's closing line: runs done / total, failures, ETA.

The launching process states the sweep (total, runs already finished, start time) in an
environment variable that its job processes inherit (joblib workers, SLURM jobs); a job then
counts the result files of the sweep folder, which costs about a millisecond for hundreds of
jobs, so the line costs nothing to the runs and adds no line to the console.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mnist_compare.results import FAILURE, METRICS

ENV = "MNIST_COMPARE_SWEEP"


def announce(total: int, already: int) -> None:
    os.environ[ENV] = json.dumps({"total": total, "already": already, "start": time.time()})


def line(sweep_dir: Path) -> str:
    """`[37/120 done, 1 failed, ETA 6 min]`, or "" outside a sweep."""
    try:
        sweep = json.loads(os.environ[ENV])
    except (KeyError, ValueError):
        return ""
    done = sum(1 for _ in sweep_dir.glob(f"*/{METRICS}"))
    failed = sum(1 for p in sweep_dir.glob(f"*/{FAILURE}") if not (p.parent / METRICS).exists())
    total, new = sweep["total"], done - sweep["already"]
    left = max(0, total - done - failed)
    eta = ""
    if new > 0 and left:
        seconds = (time.time() - sweep["start"]) / new * left
        eta = f", ETA {seconds / 60:.0f} min" if seconds >= 120 else f", ETA {seconds:.0f} s"
    return f"  [{done}/{total} done, {failed} failed{eta}]"
