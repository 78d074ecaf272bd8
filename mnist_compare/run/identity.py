"""What a run *is*: its resolved config (minus settings that cannot change numbers), hashed.

`data.test_pairs` at null or equal to `data.n_pairs` draws the very test set the protocol does: it
is left out, so the runs made before the key existed keep their identity.

Folder names, resume and the collector's duplicate check all rest on this one definition, so
`aux=0`, `aux=0.0` and leaving `aux` at its default are the same run everywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist_compare.results import METRICS, read_json

# Settings that cannot change a run's numbers: left out of its identity and folder name.
# (Thread count is NOT among them: oneDNN's reductions make ConvNet runs differ with it.)
NEUTRAL_KEYS = ("data.data_dir", "trainer.enable_progress_bar", "checkpoint_after_s", "fuse_seeds", "accel")
SEED_KEYS = ("seed", "data.seed")


def canonical(value: Any) -> Any:
    """One spelling per value: integral floats as ints (0.0 -> 0), containers element-wise."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"data.seed": 0, ...}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored identity config flattened, with `data.test_pairs` spelt out where the identity leaves
    it out (the protocol's size, `data.n_pairs`): so a reader compares sizes, never a missing key."""
    flat = flatten(config)
    if "data.n_pairs" in flat:
        flat.setdefault("data.test_pairs", flat["data.n_pairs"])
    return flat


def targets(tree: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, value) of every `_target_` in a plain config tree, lists included."""
    if isinstance(tree, list):
        return [t for i, v in enumerate(tree) for t in targets(v, f"{prefix}{i}.")]
    if not isinstance(tree, dict):
        return []
    found = [(f"{prefix}_target_", str(tree["_target_"]))] if "_target_" in tree else []
    return found + [t for k, v in tree.items() for t in targets(v, f"{prefix}{k}.")]


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.get(p)
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def identity_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config, canonical, without the neutral settings: what metrics.json stores."""
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    assert isinstance(plain, dict)
    for dotted in NEUTRAL_KEYS:
        _drop(plain, dotted)
    data = plain.get("data")
    if isinstance(data, dict) and data.get("test_pairs", None) in (None, data.get("n_pairs")):
        data.pop("test_pairs", None)  # the protocol's one size for both sets: the run it always was
    if "threads" in plain and plain["threads"] is None:
        plain["threads"] = process_threads()
    return canonical(plain)


def process_threads() -> int:
    """The thread count a run with `threads=null` trains with: the cores SLURM gave its job
    (`run/cluster.py`), else torch's own choice in this process (OMP_NUM_THREADS, the cores).
    It changes a ConvNet's numbers, so it stands in the run's identity for the null."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if os.environ.get("SLURM_JOB_ID") and cpus.isdigit():
        return int(cpus)
    import torch  # here: the collector reads identities without torch

    return torch.get_num_threads()


def digest(tree: Any) -> str:
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_id(config: dict[str, Any]) -> str:
    """Equal for equal (config, seed): the key of resume and of the collector's duplicates."""
    return digest(config)


def group_id(config: dict[str, Any]) -> str:
    """Equal for runs that differ only by their seed: what the collector averages over."""
    tree = json.loads(json.dumps(config))
    for dotted in SEED_KEYS:
        _drop(tree, dotted)
    return digest(tree)


def spell(value: Any) -> str:
    """One spelling per value, as on the command line: false, null, 0 (for 0.0), [10,50,2]."""
    value = canonical(value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(spell(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{spell(v)}" for k, v in value.items()) + "}"
    return str(value)


def job_dirname(task_overrides: ListConfig | list[str]) -> str:
    """A sweep job's folder name from its overrides, one spelling per value (`ws=False` and
    `ws=false`, `aux=0` and `aux=0.0` name the same folder), so a resumed sweep finds its jobs."""
    parsed = OverridesParser.create().parse_overrides([str(o) for o in task_overrides])
    parts = []
    for o in parsed:
        key = o.key_or_group
        if key in NEUTRAL_KEYS or o.is_sweep_override():
            continue
        parts.append(f"{key}=null" if o.is_delete() else f"{key}={spell(o.value())}")
    return _fit_name(",".join(sorted(parts)) or "defaults")


MAX_NAME_BYTES = 200  # file systems allow 255 bytes a name; the rest is kept for Hydra's and our suffixes


def _fit_name(name: str) -> str:
    """A name a file system accepts: a long one is cut and ends with a hash of the whole, so
    distinct settings keep distinct folders and a resumed sweep finds the same one."""
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    tag = f"...{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    head = name.encode()[:MAX_NAME_BYTES - len(tag)].decode(errors="ignore")
    return head + tag


OmegaConf.register_new_resolver("mc_job_dir", job_dirname, replace=True)  # conf/train.yaml: hydra.sweep.subdir


def finished_runs(sweep_dir: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """run_id -> (folder, record) of every finished run below `sweep_dir`."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(Path(sweep_dir).glob(f"**/{METRICS}")):
        record = read_json(path)
        if record and record.get("status") == "finished" and "config" in record:
            found.setdefault(record.get("run_id") or run_id(record["config"]), (path.parent, record))
    return found
