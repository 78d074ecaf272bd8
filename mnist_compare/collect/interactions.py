"""Interactions: does one thing change what another gains? Seed-paired differences of differences.

- In one sweep, per context: the WS x aux interaction, (WS + aux) - aux - WS + neither, seed by seed:
  0 when the two gains add up, negative when together they give less than the sum.
- With several folders (`collect A B --out`): for each technique of a later folder's context, its
  gain there minus its gain in the paired context of the first folder (the baseline), seed by seed:
  "did my variant change how much aux helps?".

All of a collection's interactions are one Holm family (statsmodels), apart from the paired and
variant effects' families; every interaction not significant gets the smallest effect its seeds
detect with 80% power at the family's level and the seeds its observed effect would need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mnist_compare.collect.fmt import DASH, num
from mnist_compare.collect.runs import cell_name
from mnist_compare.collect.stats import (
    ALPHA,
    _changes,
    _counterpart,
    _effect_name,
    _flags,
    _holm,
    _paired_test,
    _settings,
    detectable,
    seeds_needed,
    wilcoxon_text,
)

Cells = dict[tuple[bool, float], pd.DataFrame]


def _cells(runs: pd.DataFrame) -> Cells:
    return {(bool(ws), float(aux)): cell for (ws, aux), cell in runs.groupby(["ws", "aux"], sort=True)}


def _base(cells: Cells) -> tuple[bool, float] | None:
    """The cell each technique's gain is measured from, as in the paired effects."""
    return next((b for b in ((False, 0.0), (True, 0.0)) if b in cells), None)


def _by_pair(cell: pd.DataFrame) -> pd.Series:
    return cell.set_index("pair")["test_acc"]


def _contrast(terms: list[tuple[float, pd.DataFrame]]) -> tuple[np.ndarray, int, int]:
    """The weighted sum of cells over the seeds they share; how many runs that learned nothing it uses."""
    series = [(w, _by_pair(c), _flags(c)) for w, c in terms]
    common = series[0][1].index
    for _, s, _ in series[1:]:
        common = common.intersection(s.index)
    values = sum(w * s[common].to_numpy(float) for w, s, _ in series)
    bad = sum(int(f[common].sum()) for _, _, f in series)
    return np.asarray(values, float), len(common), bad


def _row(kind: str, context: str, effect: str, compared: str, settings: str, terms) -> tuple[dict | None, str]:
    diff, n, bad = _contrast(terms)
    if n < 2:
        return None, f"{context}, {effect}: {n} seed(s) common to the cells it needs (fewer than 2): no test"
    return {"interaction": kind, "context": context, "effect": effect, "compared": compared, "settings": settings,
            **_paired_test(diff), "_not_learned": bad, "_diff": diff}, ""


def ws_x_aux(runs: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """Per context and auxiliary weight w with the four cells: (WS, w) - (no WS, w) - (WS, 0) + (no WS, 0)."""
    rows, notes = [], []
    for context, group in runs.groupby("context", sort=False):
        cells = _cells(group)
        for aux in sorted({a for _, a in cells if a}):
            needed = [(False, 0.0), (True, 0.0), (False, aux), (True, aux)]
            if not all(c in cells for c in needed):
                continue
            terms = [(1.0, cells[(True, aux)]), (-1.0, cells[(False, aux)]), (-1.0, cells[(True, 0.0)]),
                     (1.0, cells[(False, 0.0)])]
            row, why = _row("WS x aux", context, f"WS x aux {aux:g}",
                            f"({cell_name(True, aux)}) - ({cell_name(False, aux)}) - ({cell_name(True, 0.0)}) + "
                            f"({cell_name(False, 0.0)})", "", terms)
            rows += [row] if row else []
            notes += [why] if why else []
    return rows, notes


def variant_x_technique(runs: pd.DataFrame, folders: Sequence[str],
                        pairs: dict[str, str] | None = None) -> tuple[list[dict], list[str]]:
    """Each technique's gain in a later folder's context minus its gain in the paired baseline context."""
    baseline, *later = folders
    rows, notes = [], []
    bases = [g for _, g in runs[runs["sweep"] == baseline].groupby("group_id", sort=False)]
    for folder in later:
        for context, group in runs[runs["sweep"] == folder].groupby("context", sort=False):
            mine = _cells(group)
            base = _base(mine)
            if base is None or len(mine) < 2:
                continue
            counterpart, how = _counterpart(mine[base].iloc[0], bases, pairs)
            if counterpart is None:
                notes.append(f"{folder}: {context}: {how}")
                continue
            theirs = _cells(runs[(runs["sweep"] == baseline) & (runs["context"] == counterpart.iloc[0]["context"])])
            changes = _changes(_settings(counterpart.iloc[0]), _settings(mine[base].iloc[0]))
            if how:
                changes[0] += f" ({how})"
            for cell in sorted((c for c in mine if c != base), key=lambda c: (c[1], c[0])):
                if cell not in theirs or base not in theirs:
                    notes.append(f"{folder}: {context}, {cell_name(*cell)}: the baseline's "
                                 f"{counterpart.iloc[0]['context']} has no such cell or no {cell_name(*base)}")
                    continue
                effect = _effect_name(cell, base)
                row, why = _row("variant x technique", context, f"gain of {effect}",
                                f"(gain in {folder}) - (gain in {counterpart.iloc[0]['context']} of {baseline})",
                                "; ".join(changes) or "(none)",
                                [(1.0, mine[cell]), (-1.0, mine[base]), (-1.0, theirs[cell]), (1.0, theirs[base])])
                rows += [row] if row else []
                notes += [why] if why else []
    return rows, notes


def interactions(runs: pd.DataFrame, folders: Sequence[str],
                 pairs: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Every interaction of the collection, one Holm family, with power for those not significant."""
    rows, notes = ws_x_aux(runs)
    if len(folders) > 1:
        more, why = variant_x_technique(runs, folders, pairs)
        rows, notes = rows + more, notes + why
    if not rows:
        return pd.DataFrame(), notes
    diffs = [r.pop("_diff") for r in rows]
    table = _holm(pd.DataFrame(rows))
    alpha = ALPHA / len(table)
    significant = table["p_holm"].to_numpy(float) < ALPHA
    sds = [float(np.std(d, ddof=1)) if len(d) > 1 else math.nan for d in diffs]
    table["detectable_effect"] = [math.nan if s else detectable(sd, len(d), alpha)
                                  for s, sd, d in zip(significant, sds, diffs, strict=True)]
    table["seeds_needed"] = [math.nan if s else seeds_needed(float(d.mean()), sd, alpha)
                             for s, sd, d in zip(significant, sds, diffs, strict=True)]
    return table, notes


def view(table: pd.DataFrame) -> pd.DataFrame:
    """The interactions as results.md shows them: a Wilcoxon p only where n pairs can reach ALPHA."""
    return pd.DataFrame({
        "interaction": table["interaction"], "context": table["context"], "effect": table["effect"],
        **({"settings": table["settings"]} if (table["settings"] != "").any() else {}),
        "n_pairs": table["n_pairs"], "mean diff": [f"{d:+.4f}" for d in table["mean_diff"]],
        "95% CI": [DASH if not math.isfinite(lo) else f"[{lo:+.4f}, {hi:+.4f}]"
                   for lo, hi in zip(table["ci95_low"], table["ci95_high"], strict=True)],
        "p_ttest": [num(p, ".3g") for p in table["p_ttest"]],
        "p_wilcoxon": [wilcoxon_text(p, n) for p, n in zip(table["p_wilcoxon"], table["n_pairs"], strict=True)],
        "p_holm": [num(p, ".3g") for p in table["p_holm"]], "verdict": table["verdict"],
        "smallest detectable (80% power)": [num(d, ".4f") for d in table["detectable_effect"]],
        "seeds needed": [("never (observed 0)" if math.isinf(v) else DASH if not math.isfinite(v) else f"{v:.0f}")
                         for v in table["seeds_needed"]],
    })


def section(table: pd.DataFrame, notes: list[str]) -> list[str]:
    """results.md's lines on the interactions."""
    text = ["## Interactions (same seed = same pairs)", "",
            "WS x aux: (WS + aux) - aux - WS + neither, seed by seed (0: the gains add up; negative: together "
            "less than their sum). With several folders, for each technique: its gain in a later folder's "
            "context minus its gain in the paired context of the first folder (the baseline), seed by seed. "
            "Mean, 95% CI (Student-t), paired t-test and Wilcoxon p-values, Holm over these interactions "
            "(statsmodels); for those not significant, the smallest interaction these seeds detect with 80% power "
            f"at the family's level ({ALPHA:g} / m; power of the paired t from its noncentral distribution, equal "
            "to statsmodels' TTestPower wherever that gives a figure) and the seeds the observed "
            "one would need.", ""]
    text.append(view(table).to_markdown(index=False, disable_numparse=True) if not table.empty
                else "None: no context has the four cells, and no later folder's technique gain could be paired.")
    return [*text, *(["", "Not computed:", ""] if notes else []), *(f"- {n}" for n in notes)]
