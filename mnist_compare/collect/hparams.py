"""TensorBoard's HPARAMS view of a collection: one experiment whose columns are what tells its runs apart.

Each run logs all its settings (run/fit.py), and TensorBoard's HPARAMS tab takes the first
experiment summary it finds: a variant's key that the first run lacks gets no column, and two
architectures can only be told apart by run name. The collector knows the whole collection, so it
writes `<out>/tensorboard/`: one experiment summary whose columns are the arch label, ws, aux and
every setting that differs between groups (constants left out), and one session per run with its
values and delivered figures. `tensorboard --logdir <out>/tensorboard` shows it.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from mnist_compare.collect.runs import UNSET, Sweep

METRICS = ("test_acc", "test_aux_acc", "best_test_acc", "val_acc")


def _value(text: Any) -> Any:
    """A label as TensorBoard should type it: numbers as numbers, true/false as booleans; unset: None
    (left out of the session, never a string among numbers)."""
    if isinstance(text, bool | int | float):
        return text
    if text == UNSET:
        return None
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text)
    except ValueError:
        return str(text)


def columns(sweep: Sweep) -> list[dict[str, Any]]:
    """Per run, the values of the collection's label columns (None where unset); a column whose set
    values are not all of one type is text throughout."""
    values = [{k: _value(r[k]) for k in sweep.labels} for r in sweep.runs.to_dict("records")]
    for k in sweep.labels:
        kinds = {bool if isinstance(v[k], bool) else float if isinstance(v[k], int | float) else str
                 for v in values if v[k] is not None}
        if len(kinds) > 1:
            for v, r in zip(values, sweep.runs[k], strict=True):
                v[k] = None if r == UNSET else str(r)
    return values


def write(out: Path, sweep: Sweep) -> Path:
    """(Re)write `<out>/tensorboard/`: the experiment summary, then one session per run."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    where = out / "tensorboard"
    shutil.rmtree(where, ignore_errors=True)
    runs = sweep.runs
    values = columns(sweep)
    # one value of the right type per column, so that the experiment declares every column
    template = {k: next((v[k] for v in values if v[k] is not None), None) for k in sweep.labels}
    metrics = {f"hp/{m}": 0.0 for m in METRICS if m in runs and pd.to_numeric(runs[m], errors="coerce").notna().any()}
    experiment, _, _ = hparams({k: v for k, v in template.items() if v is not None}, metrics)
    with SummaryWriter(str(where)) as writer:
        writer.file_writer.add_summary(experiment)
    for row, settings in zip(runs.to_dict("records"), values, strict=True):
        _, start, end = hparams({k: v for k, v in settings.items() if v is not None}, metrics)
        name = f"{Path(row['sweep']).name}/{row['job']}" if len(sweep.roots) > 1 else row["job"]
        with SummaryWriter(str(where / name)) as writer:
            writer.file_writer.add_summary(start)
            writer.file_writer.add_summary(end)
            for m in metrics:
                value = row.get(m.removeprefix("hp/"))
                if isinstance(value, int | float) and math.isfinite(value):
                    writer.add_scalar(m, value, 0)
    return where
