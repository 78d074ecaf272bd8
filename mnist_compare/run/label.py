"""A job's name on the console: the study's four knobs, then whatever else its overrides change.

Two jobs that differ only in `+arch.pipe.dropout=0.3` must not print the same line: every
override of the job other than the four knobs (and the settings that cannot change a run,
`identity.NEUTRAL_KEYS`) is added, each value spelt once and cut short, so a variant is seen
where it runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from mnist_compare.run.identity import NEUTRAL_KEYS, spell

KNOBS = ("arch", "ws", "aux", "seed")  # always shown, first
VALUE_CHARS = 24  # a longer value (a list, a path) is cut to this many characters
EXTRA_CHARS = 120  # and the added part of the label to about this many


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def variant(overrides: Sequence[str]) -> list[str]:
    """The overrides that set something other than the four knobs, as `key=value` (`~key` for a
    deletion), without `+`, in the order given; unparsable ones as written."""
    out = []
    parser = OverridesParser.create()
    for text in map(str, overrides):
        try:
            (o,) = parser.parse_overrides([text])
        except Exception:  # the job's own composition reports it
            out.append(_short(text.lstrip("+~"), VALUE_CHARS))
            continue
        key = o.key_or_group
        if key in KNOBS or key in NEUTRAL_KEYS or o.is_hydra_override():
            continue
        if o.is_delete():
            out.append(f"~{key}")
            continue
        out.append(f"{key}={_short(spell(o.value()), VALUE_CHARS)}")
    return out


def job_label(cfg: DictConfig, arch: str | None, overrides: Sequence[str]) -> str:
    """`arch=deep ws=false aux=0 seed=0`, then what else this job's overrides set:
    `arch=deep ws=false aux=0 seed=0 arch.pipe.dropout=0.3`."""
    base = f"arch={arch} ws={str(cfg.ws).lower()} aux={cfg.aux} seed={cfg.seed}"
    extra = variant(overrides)
    shown: list[str] = []
    for i, item in enumerate(extra):
        if shown and len(" ".join([*shown, item])) > EXTRA_CHARS:
            shown.append(f"(+{len(extra) - i} more)")
            break
        shown.append(item)
    return " ".join([base, *shown])
