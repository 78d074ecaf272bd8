"""Find sweeps' jobs, classify them (finished, failed, duplicate, ...), keep each run once, and group them."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mnist_compare.errors import UserError
from mnist_compare.results import DUPLICATE, FAILURE, METRICS, read_json
from mnist_compare.run.identity import SEED_KEYS, canonical, flat_config, group_id, run_id

# SEED_KEYS (flattened): never define a group; the seeds are what a group averages over and what
# pairs runs across cells and folders (data.seed fixes the pairs, seed the initialisation).
# Interpolations of ws and aux in conf/model/compare.yaml (`${ws}`, `${aux}`): hidden as labels
# while they equal their source in every run, since ws and aux already show them. So is the test
# set's size while it is the training set's (the protocol's rule, `data.test_pairs` null).
ALIASES = {"model.weight_sharing": "ws", "model.aux_loss_weight": "aux", "data.test_pairs": "data.n_pairs"}
LABELS = ["arch", "ws", "aux"]
ARCH_ORDER = ["shallow", "deep", "conv"]  # the report's row order; other architectures follow
UNSET = "(unset)"  # a key absent from a run's config: a value of its own, never NaN
LAST_EPOCH = "last epoch"
# Two classes, the first digit <= the second in about 55% of pairs: a model that predicts one class
# scores about 0.55 (0.45 for the other), one that guesses about 0.5. A run whose accuracy never
# rises above this, on its training pairs and on the pairs it is evaluated on, learned nothing.
CHANCE_CEILING = 0.6
DELIVERED = {True: "last-epoch test accuracy", False: "test accuracy of the checkpoint chosen on validation pairs"}


@dataclass
class Sweep:
    roots: list[Path]
    runs: pd.DataFrame  # one row per kept finished run: labels, figures, history, group, context, pair
    problems: pd.DataFrame  # sweep, job, status, detail: runs kept out of every mean
    labels: list[str]  # arch, ws, aux, then every setting that tells groups apart


def newest_sweep(base: Path = Path("multirun")) -> Path:
    """The most recently written sweep (a folder holding Hydra's multirun.yaml) under `base`."""
    sweeps = [p.parent for p in base.glob("**/multirun.yaml")] if base.is_dir() else []
    if not sweeps:
        raise UserError(f"no sweep found under {base}/: run a sweep first or pass its directory")
    return max(sweeps, key=lambda p: (p / "multirun.yaml").stat().st_mtime)


def config_key(flat: dict[str, Any]) -> str:
    """One string per config, whatever the spelling of its numbers (`aux=0` and `aux=0.0`)."""
    return json.dumps(canonical(flat), sort_keys=True, default=str)


def show(value: Any) -> str:
    """A config value as it is spelled on the command line: true, null, 0.001, 50, [196, 500, 10]."""
    if isinstance(value, np.generic):  # a numpy scalar out of a DataFrame
        value = value.item()
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(show, value)) + "]"
    return str(value)


def _job_dirs(root: Path) -> list[Path]:
    """Every folder that is a job: Hydra's `.hydra` marker, or a result, failure or duplicate record."""
    marks = [*root.glob("**/.hydra"), *(m for name in (METRICS, FAILURE, DUPLICATE) for m in root.glob(f"**/{name}"))]
    return sorted({m.parent for m in marks})


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _curves(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(c, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in c)
        for c in value.values())


# What a finished run's record must hold to enter the statistics: (key, check, what it should be).
REQUIRED = (
    ("config", lambda v: isinstance(v, dict) and bool(v), "the resolved config"),
    ("arch", lambda v: isinstance(v, str) and bool(v), "an architecture name"),
    ("ws", lambda v: isinstance(v, bool), "true or false"),
    ("aux", _finite, "a finite number"),
    ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    ("test_acc", lambda v: _finite(v) and 0 <= v <= 1, "an accuracy in [0, 1]"),
)
# Optional, but used when present: a wrong type is no finished run either.
OPTIONAL = (
    ("epochs", _count, "a count of epochs"),
    ("max_epochs", _count, "a count of epochs"),
    ("n_params", _count, "a count of parameters"),
    ("selection", lambda v: isinstance(v, str), "a string"),
    ("run_id", lambda v: isinstance(v, str) and bool(v), "a string"),
    ("group_id", lambda v: isinstance(v, str) and bool(v), "a string"),
    ("history", _curves, "curves of numbers by name"),
)


NONFINITE = ("NaN", "Infinity", "-Infinity")  # how results.write_json spells them


def nonfinite(record: dict[str, Any]) -> list[str]:
    """The figures of a record that are NaN or infinite: a diverged model, never averaged
    (records before such runs were refused held bare NaN; later ones spell it as a string)."""
    def bad(v: Any) -> bool:
        return (isinstance(v, float) and not math.isfinite(v)) or (isinstance(v, str) and v in NONFINITE)

    found = [k for k, v in record.items() if k not in ("config", "code", "versions", "overrides") and bad(v)]
    history = record.get("history")
    if isinstance(history, dict):
        found += [f"history.{k}" for k, v in history.items() if isinstance(v, list) and any(bad(x) for x in v)]
    return found


def invalid(record: dict[str, Any]) -> str | None:
    """Why a record that says it finished is no valid finished run (None: it is one)."""
    reasons = [f"no {key}" for key, _, _ in REQUIRED if key not in record]
    reasons += [f"{key} is {json.dumps(record[key], default=str)[:60]}, not {what}"
                for key, check, what in (*REQUIRED, *OPTIONAL) if key in record and not check(record[key])]
    return "; ".join(reasons) or None


def did_not_learn(record: dict[str, Any]) -> str:
    """Why a finished run learned nothing ("": it learned): the same accuracy at every epoch on the
    pairs it is evaluated on (one class predicted throughout: constant predictions score the same on
    fixed pairs), or every epoch's accuracy at chance (at most CHANCE_CEILING). Such a run still
    counts in the means (it is a result), but the tables say it is there."""
    history = record.get("history") or {}
    evaluated = history.get("test_acc") or history.get("val_acc") or [record["test_acc"]]
    trained = history.get("train_acc") or ([record["train_acc"]] if _finite(record.get("train_acc")) else [])
    if max([*evaluated, *trained]) > CHANCE_CEILING:
        return ""
    if len(evaluated) > 1 and max(evaluated) - min(evaluated) <= 1e-9:
        return f"one class predicted throughout: accuracy {evaluated[0]:.4f} at every epoch"
    return f"accuracy at chance through training (at most {max([*evaluated, *trained]):.4f})"


def _read_job(sweep: str, root: Path, job: Path) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """(finished run, None) or (None, problem): only a complete, well-formed, finite result enters the
    statistics; anything else is a problem with its reason, never a traceback."""
    where = {"sweep": sweep, "job": str(job.relative_to(root))}
    record, failure, duplicate = (read_json(job / n) for n in (METRICS, FAILURE, DUPLICATE))
    if duplicate is not None:  # the launch found this run finished elsewhere
        return None, {**where, "status": "duplicate", "detail": f"same run as {duplicate.get('of', '?')} "
                      "(duplicate.json)"}
    if record is None and failure is not None:
        return None, {**where, "status": str(failure.get("status") or "failed"),
                      "detail": str(failure.get("error", ""))}
    if record is None:
        return None, {**where, "status": "missing", "detail": "no metrics.json (interrupted or running)"}
    if record.get("status", "finished") != "finished":
        return None, {**where, "status": str(record["status"]), "detail": "metrics.json not finished"}
    if (why := invalid(record)) is not None:
        return None, {**where, "status": "invalid", "detail": f"metrics.json: {why}"}
    if bad := nonfinite(record):
        return None, {**where, "status": "failed", "detail": f"metrics.json: non-finite {', '.join(bad[:3])}"
                      f"{' ...' if len(bad) > 3 else ''} (the model diverged)"}
    if record.get("epochs", 0) < record.get("max_epochs", 1) and not record.get("stopped_early"):
        detail = f"{record.get('epochs')} of {record.get('max_epochs')} epochs"
        return None, {**where, "status": "incomplete", "detail": detail}
    config = canonical(record["config"])
    flat = flat_config(config)
    row = {k: v for k, v in record.items() if k != "config"}
    row.update(where)
    row.update({
        "flat": flat,
        "config_id": config_key(flat),
        "run_id": record.get("run_id") or run_id(config),
        "group_id": record.get("group_id") or group_id(config),
        "pair": " ".join(f"{k}={show(flat.get(k, record.get(k)))}" for k in SEED_KEYS),
        "ws": record["ws"],
        "aux": float(record["aux"]),
        "selection": record.get("selection") or LAST_EPOCH,  # records before model selection existed
    })
    row["delivered"] = DELIVERED[row["selection"] == LAST_EPOCH]
    row["learned_nothing_why"] = did_not_learn(record)
    row["learned_nothing"] = bool(row["learned_nothing_why"])
    return row, None


def _dedupe(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Keep each run once: the same run_id, or the same config (seed included), is one run.

    Rule: the first one met, in the order of the folders given, then of job paths within a folder.
    That order is the user's to choose (name the baseline sweep first) and, unlike file times, it
    survives a copy. The others are listed as `duplicate`, naming the kept one, never averaged.
    """
    kept: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    problems = []
    for row in rows:
        first = seen.get(row["run_id"]) or seen.get(row["config_id"])
        if first is None:
            kept.append(row)
            seen[row["run_id"]] = seen[row["config_id"]] = row
            continue
        same = "same" if row["test_acc"] == first["test_acc"] else "DIFFERENT"
        problems.append({"sweep": row["sweep"], "job": row["job"], "status": "duplicate",
                         "detail": f"same run as {first['sweep']}/{first['job']} (kept); test_acc "
                                   f"{row['test_acc']:.4f} here, {first['test_acc']:.4f} kept: {same}"})
    return kept, problems


def _check_roots(roots: Sequence[Path]) -> None:
    for root in roots:
        if not root.is_dir():
            raise UserError(f"{root} is not a directory: pass sweep directories such as multirun/<date>/<time>")
    resolved = [r.resolve() for r in roots]
    for i, a in enumerate(resolved):
        for j, b in enumerate(resolved):
            if i != j and (a == b or b in a.parents):
                raise UserError(f"{roots[i]} is {'the same folder as' if a == b else 'inside'} {roots[j]}: "
                                "give each sweep folder once")


def load_sweeps(roots: Sequence[Path]) -> Sweep:
    """Read every job of every folder; a run enters the statistics only when it finished all its epochs
    with a finite test accuracy, and only once."""
    roots = list(roots)
    _check_roots(roots)
    rows, problems = [], []
    for root in roots:
        jobs = _job_dirs(root)
        if not jobs:
            raise UserError(f"{root} holds no runs (no metrics.json, failure.json or .hydra job folder): "
                            "pass a sweep directory such as multirun/<date>/<time>")
        for job in jobs:
            row, problem = _read_job(str(root), root, job)
            rows += [row] if row else []
            problems += [problem] if problem else []
    rows, repeated = _dedupe(rows)
    problems = pd.DataFrame([*problems, *repeated], columns=["sweep", "job", "status", "detail"])
    if not rows:
        return Sweep(roots, pd.DataFrame(), problems, list(LABELS))
    runs = pd.DataFrame(rows)
    labels = _labels(runs)
    return Sweep(roots, _order(runs, labels), problems, labels)


def load_sweep(root: Path) -> Sweep:
    return load_sweeps([root])


def _labels(runs: pd.DataFrame) -> list[str]:
    """arch, ws, aux, then every flattened config key whose value (unset counting as one) differs
    between groups: what a reader needs to tell groups apart. Hidden: the architecture's own keys
    (`arch.*` and their copies such as `model.pipe.*`) unless they differ within one architecture,
    and the copies of ws and aux. Adds the label columns to `runs`."""
    flats = list(runs["flat"])
    keys = sorted(set().union(*flats) - set(SEED_KEYS) - {"ws", "aux"})
    values = {k: [show(f[k]) if k in f else UNSET for f in flats] for k in keys}
    aliased = {k for k, src in ALIASES.items()
               if k in values and values[k] == [show(f.get(src, UNSET)) for f in flats]}
    own = {k for k in keys if k.startswith("arch.")}
    of_arch = {tuple(values[k]) for k in own}
    aliased |= {k for k in keys if k not in own and tuple(values[k]) in of_arch}
    table = pd.DataFrame({"arch": runs["arch"].astype(object), "group_id": runs["group_id"], **values})
    groups = table.drop_duplicates("group_id")
    extra = [k for k in keys if k not in aliased and (
        (groups.groupby("arch")[k].nunique() > 1).any() if k in own else groups[k].nunique() > 1)]
    shown = groups[["arch", *extra]].assign(ws=runs["ws"], aux=runs["aux"])
    if len(shown.drop_duplicates()) < len(groups):  # an alias overridden by hand: show everything that differs
        extra = [k for k in keys if groups[k].nunique() > 1]
    for k in extra:
        runs[k] = values[k]
    return [*LABELS, *extra]


def _sort_value(text: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then words, then unset."""
    if text == UNSET:
        return (2, 0.0, "")
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def cell_name(ws: bool, aux: float) -> str:
    """A column of Table 1."""
    return f"WS {'on' if ws else 'off'}, aux {f'{aux:g}' if aux else 'off'}"


def context_name(values: dict[str, Any]) -> str:
    """A Table-1 row: the architecture alone, or `key=value` pairs when other settings were swept."""
    if list(values) == ["arch"]:
        return str(values["arch"])
    return " ".join(f"{k}={show(v)}" for k, v in values.items())


def _order(runs: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Sort runs (architectures in the report's order, numbers numerically) and number the groups
    and contexts (a Table-1 row) in that order."""
    context = [c for c in labels if c not in ("ws", "aux")]
    arch_rank = {a: i for i, a in enumerate(ARCH_ORDER)}
    keys = [
        (arch_rank.get(r["arch"], len(ARCH_ORDER)), str(r["arch"]), *(_sort_value(r[k]) for k in context[1:]),
         r["aux"], r["ws"], r["seed"], r["pair"])
        for r in runs.to_dict("records")
    ]
    runs = runs.iloc[sorted(range(len(keys)), key=keys.__getitem__)].reset_index(drop=True)
    runs["group"] = pd.factorize(runs["group_id"])[0]
    runs["context"] = [context_name({k: r[k] for k in context}) for r in runs.to_dict("records")]
    return runs
