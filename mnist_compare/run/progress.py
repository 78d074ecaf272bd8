"""A sweep's progress, appended to each job's closing line: runs done / total, failures, ETA.

The launching process states the sweep (total, runs already finished, start time) in an
environment variable that its job processes inherit (joblib workers, SLURM jobs); a job then
counts and dates the result files of the sweep folder after its training (about 2 ms with the
120 results of the Table-1 sweep: `python -m mnist_compare.bench progress`), so the line costs
the runs nothing and adds no line to the console.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mnist_compare.results import FAILURE, METRICS

ENV = "MNIST_COMPARE_SWEEP"
WINDOW = 10  # jobs whose pace the ETA assumes for the rest
SPAN_S = 60.0  # and at least this long: a batched cell's results land together (accel/fused.py)


def announce(total: int, already: int, sweep_dir: Path | None = None, **more: object) -> None:
    """State this launch for its jobs: `total` jobs, `already` of them finished earlier, and what
    `sweep_dir` held before it (results of other jobs, failures of an earlier launch), which its
    count leaves out: by number and by the newest failure's file time, set by the file server as
    the new files' times are, so a clock that disagrees with ours changes nothing. `more`: what else
    the jobs read (`code`: the code the sweep was checked with)."""
    statement: dict[str, Any] = {"total": total, "already": already, "start": time.time(), **more}
    if sweep_dir is not None:  # (a folder not made yet holds nothing)
        statement["results"] = sum(1 for _ in sweep_dir.glob(f"*/{METRICS}"))
        statement["failed_before_ns"] = max((_mtime_ns(p) for p in sweep_dir.glob(f"*/{FAILURE}")), default=None)
    os.environ[ENV] = json.dumps(statement)


def line(sweep_dir: Path, waiting: int = 0) -> str:
    """`[37/120 done, 1 failed, ETA 6 min]`, or "" outside a sweep.

    `waiting`: runs this worker has trained with the job (a batched cell, accel/fused.py) whose
    records come next, within a second; the ETA counts them as ended now, or the first record
    of a cell would see one run in the cell's whole time and promise the end ten times too late.

    The ETA runs at the pace of the last `WINDOW` jobs of this launch (their result files'
    times), or of the last `SPAN_S` seconds where those jobs all ended within them (a batched
    cell's ten results come at once), not of the whole sweep: a sweep's jobs come in order, so
    the 40 ConvNet runs that end the Table-1 sweep take about 9x as long per run as the 80 MLP
    runs before them, and an average over all finished jobs would promise the end minutes too
    early. Until `WINDOW` jobs
    have ended (or where the file server's clock disagrees with this one) it uses the average
    since the launch."""
    try:
        sweep = json.loads(os.environ[ENV])
    except (KeyError, ValueError):
        return ""
    results = list(sweep_dir.glob(f"*/{METRICS}"))
    stale = sweep.get("failed_before_ns")  # failures of an earlier launch: not this one's
    failures = [p for p in sweep_dir.glob(f"*/{FAILURE}")
                if not (p.parent / METRICS).exists() and (stale is None or _mtime_ns(p) > stale)]
    # this launch's jobs only: results that other jobs left in the folder (an earlier launch with
    # other seeds) are not counted; without a statement of the folder, every result is
    done = sweep["already"] + max(0, len(results) - sweep["results"]) if "results" in sweep else len(results)
    total, start, now = sweep["total"], sweep["start"], time.time()
    left = max(0, total - done - len(failures) - waiting)
    eta = ""
    finished = sorted([*(t for t in (_mtime(p) for p in [*results, *failures]) if t >= start), *[now] * waiting])
    new = done + len(failures) + waiting - sweep["already"]  # ended in this launch
    if left and len(finished) > WINDOW and now > finished[-WINDOW - 1]:
        since = max(start, min(finished[-WINDOW - 1], now - SPAN_S))
        per_job = (now - since) / max(1, sum(t > since for t in finished))
    elif left and new > 0:  # few jobs so far, or file times from a clock that disagrees with ours
        per_job = (now - start) / new
    else:
        per_job = None
    if per_job is not None:
        seconds = max(0.0, per_job * left)
        eta = f", ETA {seconds / 60:.0f} min" if seconds >= 120 else f", ETA {seconds:.0f} s"
    return f"  [{done}/{total} done, {len(failures)} failed{eta}]"


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # removed meanwhile (a re-run starting clean)
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile (a re-run starting clean)
        return 0.0
