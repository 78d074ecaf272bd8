"""Find a sweep's jobs, classify them (finished, failed, incomplete, missing), and group them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mnist_compare.errors import UserError
from mnist_compare.results import FAILURE, METRICS, read_json

# Flattened config keys that never define a group: the seed is what a group averages over.
SEED_KEYS = {"seed", "data.seed"}
LABELS = ["arch", "ws", "aux"]
ARCH_ORDER = ["shallow", "deep", "conv"]  # the report's row order; other architectures follow


@dataclass
class Sweep:
    root: Path
    runs: pd.DataFrame  # one row per finished run: labels, figures, history, group key
    problems: pd.DataFrame  # job, status, detail: runs kept out of every mean
    labels: list[str]  # columns that tell the groups apart


def newest_sweep(base: Path = Path("multirun")) -> Path:
    """The most recently written sweep (a folder holding Hydra's multirun.yaml) under `base`."""
    sweeps = [p.parent for p in base.glob("**/multirun.yaml")] if base.is_dir() else []
    if not sweeps:
        raise UserError(f"no sweep found under {base}/: run a sweep first or pass its directory")
    return max(sweeps, key=lambda p: (p / "multirun.yaml").stat().st_mtime)


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value) if isinstance(value, list) else value
    return flat


def _job_dirs(root: Path) -> list[Path]:
    """Every folder that is a job: Hydra's `.hydra` marker, or a result or failure record."""
    marks = [*root.glob("**/.hydra"), *root.glob(f"**/{METRICS}"), *root.glob(f"**/{FAILURE}")]
    return sorted({m.parent for m in marks})


def load_sweep(root: Path) -> Sweep:
    """Read every job; a run enters the statistics only when it finished all its epochs."""
    if not root.is_dir():
        raise UserError(f"{root} is not a directory: pass a sweep directory such as multirun/<date>/<time>")
    rows, problems = [], []
    for job in _job_dirs(root):
        name = str(job.relative_to(root))
        record, failure = read_json(job / METRICS), read_json(job / FAILURE)
        if failure is not None and record is None:
            problems.append({"job": name, "status": "failed", "detail": failure.get("error", "")})
        elif record is None:
            problems.append({"job": name, "status": "missing", "detail": "no metrics.json (interrupted or running)"})
        elif record.get("epochs", 0) < record.get("max_epochs", 1) and not record.get("stopped_early"):
            detail = f"{record.get('epochs')} of {record.get('max_epochs')} epochs"
            problems.append({"job": name, "status": "incomplete", "detail": detail})
        else:
            flat = _flatten(record.get("config", {}))
            key = tuple(sorted((k, str(v)) for k, v in flat.items() if k not in SEED_KEYS))
            rows.append({**{k: v for k, v in record.items() if k != "config"}, "job": name, "_key": key,
                         "_flat": flat})
    if not rows and not problems:
        raise UserError(f"{root} holds no runs (no metrics.json or job folders): pass a sweep directory")
    runs = pd.DataFrame(rows)
    if rows:
        extra = sorted(set(runs["arch"]) - set(ARCH_ORDER))
        runs["arch"] = pd.Categorical(runs["arch"], [*ARCH_ORDER, *extra], ordered=True)
    labels = _labels(runs) if rows else list(LABELS)
    return Sweep(root, runs, pd.DataFrame(problems, columns=["job", "status", "detail"]), labels)


def _labels(runs: pd.DataFrame) -> list[str]:
    """arch, ws, aux, then any other setting that splits groups that these do not already split."""
    labels = list(LABELS)
    flat = pd.DataFrame(list(runs["_flat"]))
    for column in sorted(flat.columns):
        if column in SEED_KEYS or flat[column].astype(str).nunique() < 2:
            continue
        keys = runs[labels].astype(str).agg("|".join, axis=1)
        if (flat[column].astype(str).groupby(keys).nunique() > 1).any():
            runs[column] = flat[column].astype(str)
            labels.append(column)
    return labels
