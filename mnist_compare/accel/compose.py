"""A sweep's job configs, each as Hydra's sweeper composes it, for a fraction of the cost.

Hydra composes every job from its YAML files, about 80 ms a job (the defaults list, then the
merges); the Table-1 sweep's 120 jobs took most of the pre-launch check's 10-15 s. Its jobs
differ in two ways: the config groups they choose (`arch=conv`) and plain values (`seed=3`,
`aux=0.5`). A job is composed in full once per distinct rest of its overrides (the other
overrides as written, the plain values' keys in their places); a job that differs from an
earlier one only in plain values gets a copy of that composition with its own values applied by
Hydra's own code (`_apply_overrides_to_config`) and the two fields Hydra derives from the
override list (`hydra.overrides.task`, `hydra.job.override_dirname`) set as Hydra sets them.
Anything else (a group, `+key`, `~key`, a dict or list value, a `hydra.` key, keys that
overlap) is composed in full, and so is a job whose value cannot be set on the copy (Hydra's
error then says why). Tested (tests/test_compose.py): every job of several sweeps, both ways, equal.

The one module of the project that touches Hydra's private API (the two names imported from
`hydra._internal` below); where a Hydra release lacks them, every job is composed in full, as
Hydra composes it (`load_sweep_config`, public).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from omegaconf import DictConfig, OmegaConf, open_dict

try:  # Hydra's private API, here only
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

    apply_overrides = ConfigLoaderImpl._apply_overrides_to_config
except (ImportError, AttributeError):  # another Hydra: every job composed in full
    apply_overrides = get_overrides_dirname = None  # type: ignore[assignment]

PLAIN = (bool, int, float, str, type(None))


def plain_value(override: Override, groups: set[str]) -> bool:
    """`key=value` setting one value of the job's own config: not a group, not Hydra's node."""
    return (override.type == OverrideType.CHANGE and override.package is None
            and override.value_type == ValueType.ELEMENT and not override.is_hydra_override()
            and "/" not in override.key_or_group and override.key_or_group not in groups
            and isinstance(override.value(), PLAIN))


def overlaps(key: str, other: str) -> bool:
    return key == other or key.startswith(other + ".") or other.startswith(key + ".")


def compose_jobs(loader: ConfigLoader, master: DictConfig, jobs: Sequence[Sequence[str]]) -> list[DictConfig]:
    """Each job's config, equal to `loader.load_sweep_config(master, job)`."""
    if apply_overrides is None or get_overrides_dirname is None:
        return [loader.load_sweep_config(master, list(job)) for job in jobs]
    parser = OverridesParser.create(config_loader=loader)
    groups = set(master.hydra.runtime.choices)
    composed: dict[tuple[str, ...], DictConfig] = {}  # a full composition, by the job's other overrides
    out = []
    for job in jobs:
        parsed = parser.parse_overrides(list(job))
        keys = [o.key_or_group for o in parsed]
        plain = [plain_value(o, groups) and not any(overlaps(k, other) for other in keys[:i] + keys[i + 1:])
                 for i, (o, k) in enumerate(zip(parsed, keys, strict=True))]
        shape = tuple(f"{k}=" if p else str(o.input_line) for o, k, p in zip(parsed, keys, plain, strict=True))
        base = composed.get(shape)
        cfg = with_values(master, base, [o for o, p in zip(parsed, plain, strict=True) if p],
                          [o for o in parsed if not o.is_hydra_override()]) if base is not None else None
        if cfg is None:
            cfg = loader.load_sweep_config(master, list(job))
            composed.setdefault(shape, cfg)
        out.append(cfg)
    return out


def with_values(master: DictConfig, base: DictConfig, values: list[Override], app: list[Override]) -> DictConfig | None:
    """A copy of `base` with these plain values, as Hydra would have composed it (`base` set the
    same keys, none of which another override touches); None where a value cannot be set (the job
    is then composed in full, which reports the error itself)."""
    cfg = copy.deepcopy(base)
    try:
        apply_overrides(values, cfg)
    except Exception:  # the full composition says what is wrong
        return None
    OmegaConf.clear_cache(cfg)  # as on a fresh composition; the master's is copied in below
    with open_dict(cfg.hydra):
        # Hydra appends a job's overrides to whatever the primary config's task list holds
        before = list(cfg.hydra.overrides.task)[:len(cfg.hydra.overrides.task) - len(app)]
        cfg.hydra.overrides.task = [*before, *(o.input_line for o in app)]
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app, kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
            item_sep=cfg.hydra.job.config.override_dirname.item_sep,
            exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys)
    OmegaConf.copy_cache(from_config=master, to_config=cfg)
    return cfg
