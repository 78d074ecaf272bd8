"""Effect curves: each technique's seed-paired gain at each value of a swept numeric setting.

The setting (the knob) is any number that tells groups apart and was run at three values or
more: `data.n_pairs` in a training-size study, `model.optimizer.lr`, ... or the auxiliary weight
itself. At each value, within each line (the architecture, and any other setting that differs),
every technique is compared seed by seed with the baseline cell, as in the paired effects; for a
knob that is the auxiliary weight, each weight with weight 0 at the same WS. Where the four cells
are there, the WS x aux interaction is a curve too. All of a knob's comparisons are one Holm family
(statsmodels); a gain not shown gets the smallest gain its seeds detect with 80% power at the
family's level and the seeds the observed one would need, as in the conclusions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mnist_compare.collect import claims
from mnist_compare.collect.fmt import DASH, num
from mnist_compare.collect.interactions import _cells, _contrast
from mnist_compare.collect.runs import UNSET, cell_name, context_name
from mnist_compare.collect.stats import (
    ALPHA,
    _effect_name,
    _holm,
    _paired_test,
    accuracy_interval,
    detectable,
    seeds_needed,
)

MIN_VALUES = 3  # two values make a comparison, not a curve
AUX = "aux"


@dataclass
class Curves:
    knob: str
    table: pd.DataFrame  # one row per (line, technique, value)
    levels: pd.DataFrame  # test accuracy per (line, cell, value): mean and 95% interval
    verdicts: pd.DataFrame  # the report's claims per value, where the protocol's cells are there
    comparisons: pd.DataFrame  # each claim's comparisons per value: estimate, 95% CI, verdict
    notes: list[str] = field(default_factory=list)
    delivered: str = ""  # which accuracy the runs deliver (last epoch, or a checkpoint chosen on validation)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def knobs(runs: pd.DataFrame, labels: list[str]) -> list[str]:
    """The numeric settings (labels as `_labels` spells them) that take MIN_VALUES values or more
    within one line (the architecture and the other settings), then `aux` where it does."""
    numeric = [k for k in labels if k not in ("arch", "ws", "aux")
               and all(v != UNSET and _number(v) is not None for v in runs[k])]
    return [k for k in [*numeric, AUX] if runs.groupby(_lines(labels, k), sort=False)[k].nunique().max() >= MIN_VALUES]


def log_scale(values: list[float]) -> bool:
    """A log x axis where the values are spaced by a roughly constant factor (250, 500, ..., 4000)."""
    values = sorted(set(values))
    if len(values) < MIN_VALUES or values[0] <= 0:
        return False
    ratios = np.diff(np.log(values))
    return bool(ratios.min() >= math.log(1.5) and ratios.max() / ratios.min() < 1.5)


def _lines(labels: list[str], knob: str) -> list[str]:
    """What a line is: the architecture and every other setting that differs (not the knob, ws, aux)."""
    return [k for k in labels if k not in ("ws", "aux", knob)]


def _comparisons(runs: pd.DataFrame, labels: list[str], knob: str) -> tuple[list[dict], list[str]]:
    """Per line, technique and value: the seed-paired difference from the line's baseline cell,
    the same cell at every value (WS off and aux off; else WS on and aux off; for the aux knob,
    weight 0 at the same WS), so that a curve is one comparison followed along the knob; a value
    without that cell is left off the curve, and said."""
    rows, notes = [], []
    line_keys = _lines(labels, knob)
    for key, line_runs in runs.groupby([*line_keys, "ws"] if knob == AUX else line_keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        line = context_name(dict(zip(line_keys, key, strict=False)))
        if knob == AUX:
            ws = bool(key[-1])
            cells = _cells(line_runs)
            if (ws, 0.0) not in cells:
                notes.append(f"{line}, WS {'on' if ws else 'off'}: no aux 0 cell to measure the weights against")
                continue
            pairs = [(f"aux (WS {'on' if ws else 'off'})", a, [(1.0, cells[(ws, a)]), (-1.0, cells[(ws, 0.0)])])
                     for (_, a) in sorted(c for c in cells if c != (ws, 0.0))]
        else:
            by_value = {_number(v): _cells(g) for v, g in line_runs.groupby(knob, sort=False)}
            base = next((b for b in ((False, 0.0), (True, 0.0)) if sum(b in c for c in by_value.values()) >= 2), None)
            if base is None:
                notes.append(f"{line}: no baseline cell (WS off or on, aux off) at two {knob} values or more: no curve")
                continue
            techniques = sorted({c for cells in by_value.values() for c in cells if c != base},
                                key=lambda c: (c[1], c[0]))
            pairs = []
            for value, cells in sorted(by_value.items()):
                if base not in cells:
                    notes.append(f"{line} {knob}={value:g}: no {cell_name(*base)} cell, the curve's baseline: "
                                 "not on the curve")
                    continue
                missing = [cell_name(*c) for c in techniques if c not in cells]
                if missing:
                    notes.append(f"{line} {knob}={value:g}: no {'; no '.join(missing)} cell")
                pairs += [(_effect_name(c, base), value, [(1.0, cells[c]), (-1.0, cells[base])])
                          for c in techniques if c in cells]
                pairs += [(f"WS x aux {a:g} (interaction)", value,
                           [(1.0, cells[(True, a)]), (-1.0, cells[(False, a)]), (-1.0, cells[(True, 0.0)]),
                            (1.0, cells[(False, 0.0)])])
                          for a in sorted({a for _, a in cells if a})
                          if all(c in cells for c in ((False, 0.0), (True, 0.0), (False, a), (True, a)))]
        for technique, value, terms in pairs:
            diff, n, bad = _contrast(terms)
            if n < 2:
                notes.append(f"{line}, {technique} at {knob}={value:g}: {n} seed(s) in common (fewer than 2): no test")
                continue
            rows.append({"knob": knob, "line": line, "arch": line_runs["arch"].iloc[0], "technique": technique,
                         "value": value, **_paired_test(diff), "_not_learned": bad, "_diff": diff})
    points = pd.Series([(r["line"], r["technique"]) for r in rows]).value_counts() if rows else pd.Series()
    for (line, technique), n in points.items():
        if n < 2:
            notes.append(f"{line}, {technique}: compared at one {knob} only: no curve, left out of the family")
    return [r for r in rows if points[(r["line"], r["technique"])] >= 2], notes


def _levels(runs: pd.DataFrame, labels: list[str], knob: str) -> pd.DataFrame:
    line_keys = _lines(labels, knob)
    rows = []
    for key, group in runs.groupby([*line_keys, "ws", "aux", knob] if knob != AUX else [*line_keys, "ws", "aux"],
                                   sort=False):
        key = key if isinstance(key, tuple) else (key,)
        acc = group["test_acc"].to_numpy(float)
        low, high, _ = accuracy_interval(acc)
        value = float(group["aux"].iloc[0]) if knob == AUX else _number(key[-1])
        rows.append({"line": context_name(dict(zip(line_keys, key, strict=False))), "arch": group["arch"].iloc[0],
                     "cell": cell_name(bool(group["ws"].iloc[0]), float(group["aux"].iloc[0])) if knob != AUX
                     else f"WS {'on' if group['ws'].iloc[0] else 'off'}", "value": value, "n": len(acc),
                     "test_acc_mean": acc.mean(), "ci95_low": low, "ci95_high": high})
    return pd.DataFrame(rows)


def _verdicts(runs: pd.DataFrame, labels: list[str], knob: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The report's claims at each value, their comparisons (each value, with the other settings
    that differ, a block of its own, as in conclusions.csv), and why a block has none."""
    if knob == AUX:
        return pd.DataFrame(), pd.DataFrame(), []
    others = [k for k in labels if k not in ("arch", "ws", "aux", knob)]
    rows, parts, notes = [], [], []
    for key, block in runs.groupby([*others, knob], sort=False):
        key = key if isinstance(key, tuple) else (key,)
        where = {"others": " ".join(f"{k}={v}" for k, v in zip(others, key, strict=False)), "value": _number(key[-1])}
        cells, why = claims.gather(block)
        if cells is None:
            notes.append(f"the report's claims at {' '.join(filter(None, [where['others'], f'{knob}={key[-1]}']))}: "
                         f"{why}")
            continue
        table = claims.conclusions(cells)
        parts += [{**where, **r} for r in table[["claim", "comparison", "expect", "n_seeds", "estimate", "ci95_low",
                                                   "ci95_high", "p_holm", "verdict"]].to_dict("records")]
        for claim, group in table.groupby("claim", sort=False):
            rows.append({**where, "claim": claim, "says": group["says"].iloc[0],
                         "verdict": group["claim_verdict"].iloc[0],
                         "comparisons": ", ".join(f"{(group['verdict'] == v).sum()} {v}"
                                                  for v in (claims.HOLDS, claims.NOT_SHOWN, claims.CONTRADICTED)
                                                  if (group["verdict"] == v).any())})
    return pd.DataFrame(rows), pd.DataFrame(parts), notes


def curves(runs: pd.DataFrame, labels: list[str]) -> list[Curves]:
    """One Curves per knob of the collection (none when nothing numeric was swept over 3+ values)."""
    found = []
    for knob in knobs(runs, labels):
        rows, notes = _comparisons(runs, labels, knob)
        if not rows:
            found.append(Curves(knob, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), notes,
                                "; ".join(dict.fromkeys(runs["delivered"]))))
            continue
        diffs = [r.pop("_diff") for r in rows]
        table = _holm(pd.DataFrame(rows)).rename(columns={"n_pairs": "n_seeds"})  # pairs of runs, one per seed
        alpha = ALPHA / len(table)
        shown = table["p_holm"].to_numpy(float) < ALPHA
        sds = [float(np.std(d, ddof=1)) for d in diffs]
        table["detectable_effect"] = [math.nan if s else detectable(sd, len(d), alpha)
                                      for s, sd, d in zip(shown, sds, diffs, strict=True)]
        table["seeds_needed"] = [math.nan if s else seeds_needed(float(d.mean()), sd, alpha)
                                 for s, sd, d in zip(shown, sds, diffs, strict=True)]
        first = {k: {v: i for i, v in enumerate(dict.fromkeys(table[k]))} for k in ("line", "technique")}
        table = table.sort_values(["line", "technique", "value"], kind="stable",  # lines in the collector's order
                                  key=lambda col: col.map(first[col.name]) if col.name in first else col)
        verdicts, parts, why = _verdicts(runs, labels, knob)
        found.append(Curves(knob, table.reset_index(drop=True), _levels(runs, labels, knob), verdicts, parts,
                            notes + why, "; ".join(dict.fromkeys(runs["delivered"]))))
    return found


def _shown(row: pd.Series) -> str:
    if row["p_holm"] < ALPHA:
        return "gain" if row["mean_diff"] > 0 else "loss"
    return "not shown"


def _values(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def findings(c: Curves) -> list[str]:
    """The curves in sentences, every figure from the table: where each technique's gain is shown,
    where it is not and what these seeds could have detected there, the interaction, the claims."""
    if c.table.empty:
        return []
    lines = []
    knob = "the auxiliary weight" if c.knob == AUX else c.knob
    for (line, technique), rows in c.table.groupby(["line", "technique"], sort=False):
        rows = rows.sort_values("value")
        kinds = [_shown(r) for _, r in rows.iterrows()]
        gains = [v for v, k in zip(rows["value"], kinds, strict=True) if k == "gain"]
        losses = [v for v, k in zip(rows["value"], kinds, strict=True) if k == "loss"]
        unshown = rows[[k == "not shown" for k in kinds]]
        low, high = (f"{100 * rows['mean_diff'].agg(f):+.1f}" for f in ("min", "max"))
        span = f"{low} pp" if low == high else f"{low} to {high} pp"
        parts = [f"gain shown at {knob} = {_values(gains)}"] if gains else [] if losses else ["no gain shown"]
        if losses:
            parts.append(f"loss shown at {knob} = {_values(losses)}")
        if len(unshown):
            detect = unshown["detectable_effect"].to_numpy(float)
            sized = detect[np.isfinite(detect)]
            low, high = (f"{100 * sized.min():.1f}", f"{100 * sized.max():.1f}") if len(sized) else ("", "")
            power = ("no spread to size a test by" if not len(sized) else
                     f"there these seeds detect {low if low == high else f'{low}-{high}'} pp with 80% power"
                     + ("" if len(sized) == len(detect) else "; elsewhere no spread to size a test by"))
            parts.append(f"not shown at {_values(list(unshown['value']))} ({power})")
        if gains and len(unshown) and max(gains) < unshown["value"].min():
            parts[-1] += f"; it stops being shown above {knob} = {max(gains):g}"
        empty = [v for v, verdict in zip(rows["value"], rows["verdict"], strict=True) if "learned nothing" in verdict]
        if empty:
            parts.append(f"runs that learned nothing among those compared at {_values(empty)}")
        lines.append(f"- **{line}, {technique}** ({span} over {knob} = {_values(list(rows['value']))}): "
                     f"{'; '.join(parts)}.")
    if c.verdicts.empty:
        return lines
    for (others, claim), rows in c.verdicts.groupby(["others", "claim"], sort=False):
        rows = rows.sort_values("value")
        holds = [v for v, verdict in zip(rows["value"], rows["verdict"], strict=True) if verdict == claims.HOLDS]
        against = [v for v, verdict in zip(rows["value"], rows["verdict"], strict=True)
                   if verdict == claims.CONTRADICTED]
        parts = c.comparisons[(c.comparisons["others"] == others) & (c.comparisons["claim"] == claim)]
        parts = parts.sort_values("value")
        sizes = "" if parts["comparison"].nunique() > 1 else " (" + parts["comparison"].iloc[0] \
            + ": " + ", ".join(_estimate(r) for _, r in parts.iterrows()) + ")"
        lines.append(f"- {f'{others}: ' if others else ''}Claim *{rows['says'].iloc[0]}*: holds at "
                     f"{_values(holds) if holds else 'no value'}"
                     f"{f'; contradicted at {_values(against)}' if against else ''} (of {knob} = "
                     f"{_values(list(rows['value']))}){sizes}.")
    return lines


def _estimate(row: pd.Series) -> str:
    """A claim's comparison at one value, in points (a level, e.g. digit accuracy, in percent)."""
    level = str(row["expect"]).startswith("digit")
    return f"{100 * row['estimate']:{'.1f' if level else '+.1f'}}{'%' if level else ' pp'} at {row['value']:g}"


def comparisons_view(parts: pd.DataFrame, knob: str) -> pd.DataFrame:
    """Each comparison of the claims (rows) at each value (columns): estimate, 95% CI, verdict."""
    cell = [f"{num(e, '+.4f')} [{num(lo, '+.4f')}, {num(hi, '+.4f')}] {v}"
            for e, lo, hi, v in zip(parts["estimate"], parts["ci95_low"], parts["ci95_high"], parts["verdict"],
                                    strict=True)]
    index = ["others", "claim", "comparison"] if (parts["others"] != "").any() else ["claim", "comparison"]
    grid = parts.assign(cell=cell).pivot_table(index=index, columns="value", values="cell", aggfunc="first",
                                               sort=False)
    grid.columns = [f"{knob}={v:g}" for v in grid.columns]
    return grid.reset_index().fillna(DASH).rename(columns={"others": "other settings"})


def view(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "line": table["line"], "technique": table["technique"], "value": [f"{v:g}" for v in table["value"]],
        "seeds": table["n_seeds"], "gain": [f"{d:+.4f}" for d in table["mean_diff"]],
        "95% CI": [DASH if not math.isfinite(lo) else f"[{lo:+.4f}, {hi:+.4f}]"
                   for lo, hi in zip(table["ci95_low"], table["ci95_high"], strict=True)],
        "p (Holm)": [num(p, ".3g") for p in table["p_holm"]], "verdict": table["verdict"],
        "smallest detectable (80% power)": [num(d, ".4f") for d in table["detectable_effect"]],
        "seeds needed": [("never (observed 0)" if math.isinf(v) else DASH if not math.isfinite(v) else f"{v:.0f}")
                         for v in table["seeds_needed"]],
    })


def markdown(found: list[Curves], title: str) -> str:
    text = [f"# {title}", "", __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(), ""]
    for c in found:
        text += [f"## Along {c.knob}", ""]
        if c.table.empty:
            text += ["No comparison could be made:", "", *(f"- {n}" for n in c.notes), ""]
            continue
        seeds = sorted(set(c.table["n_seeds"]))
        text += [f"Accuracy: {c.delivered}. Family: {len(c.table)} comparisons on {_values(seeds)} seeds. Figures: "
                 + ", ".join(f"[{figure_name(c.knob, line)}]({figure_name(c.knob, line)})"
                             for line in dict.fromkeys(c.table["line"])) + ".", "",
                 "### What the curves show", "", *findings(c), ""]
        if not c.verdicts.empty:
            grid = c.verdicts.assign(cell=[f"{v} ({n})" for v, n in zip(c.verdicts["verdict"],
                                                                         c.verdicts["comparisons"], strict=True)])
            index = ["others", "claim", "says"] if (c.verdicts["others"] != "").any() else ["claim", "says"]
            grid = grid.pivot_table(index=index, columns="value", values="cell", aggfunc="first", sort=False)
            grid.columns = [f"{c.knob}={v:g}" for v in grid.columns]
            text += ["### The report's claims at each value", "",
                     "Each value is a block of its own (one Holm family, as in conclusions.md): the claim's "
                     "verdict, then how its comparisons came out.", "",
                     grid.reset_index().drop(columns="claim")
                     .rename(columns={"says": "claim (the report)", "others": "other settings"})
                     .fillna(DASH).to_markdown(index=False, disable_numparse=True), ""]
        text += ["### Every comparison", "", view(c.table).to_markdown(index=False, disable_numparse=True), ""]
        if not c.comparisons.empty:
            text += ["### The claims' comparisons at each value", "",
                     "Estimate, 95% CI and verdict of each comparison (a difference of test accuracy; for "
                     "the digit claim, the digit accuracy itself).", "",
                     comparisons_view(c.comparisons, c.knob).to_markdown(index=False, disable_numparse=True), ""]
        if c.notes:
            text += ["Not compared:", "", *(f"- {n}" for n in c.notes), ""]
    return "\n".join(text)


def figure_name(knob: str, line: str) -> str:
    return "curve_" + re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{knob}_{line}").strip("_") + ".png"


def figures(out: Path, c: Curves) -> list[Path]:
    """One figure per line: test accuracy of each cell (top) and each technique's gain (bottom)
    against the knob, 95% intervals as bands, the zero line drawn, log x where the values double."""
    written = []
    xlabel = "auxiliary loss weight w" if c.knob == AUX else c.knob
    for line, gains in c.table.groupby("line", sort=False):
        levels = c.levels[c.levels["line"] == line]
        log = log_scale(list(gains["value"]) + list(levels["value"]))
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 7.5), sharex=True)
        for cell, rows in levels.groupby("cell", sort=False):
            rows = rows.sort_values("value")
            (drawn,) = top.plot(rows["value"], rows["test_acc_mean"], marker="o", ms=3, label=cell)
            top.fill_between(rows["value"], rows["ci95_low"], rows["ci95_high"], color=drawn.get_color(), alpha=0.2)
        for technique, rows in gains.groupby("technique", sort=False):
            rows = rows.sort_values("value")
            dashed = "interaction" in technique
            (drawn,) = bottom.plot(rows["value"], rows["mean_diff"], marker="o", ms=3, ls="--" if dashed else "-",
                                   label=technique)
            bottom.fill_between(rows["value"], rows["ci95_low"], rows["ci95_high"], color=drawn.get_color(),
                                alpha=0.2)
            shown = rows[rows["p_holm"] < ALPHA]
            bottom.scatter(shown["value"], shown["mean_diff"], s=40, facecolors="none", edgecolors=drawn.get_color())
        bottom.axhline(0.0, color="black", lw=0.8)
        for ax in (top, bottom):
            if log:
                ax.set_xscale("log", base=2)
                ax.set_xticks(sorted(set(gains["value"])), [f"{v:g}" for v in sorted(set(gains["value"]))])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        top.set_ylabel("test accuracy, mean and 95% CI")
        bottom.set_ylabel("gain over the baseline, seed-paired\nmean and 95% CI (circled: Holm p < 0.05)")
        bottom.set_xlabel(xlabel + (" (log scale)" if log else ""))
        seeds = sorted(set(gains["n_seeds"]))
        top.set_title(f"{line}: along {xlabel}, {_values(seeds)} seeds; {c.delivered}", fontsize=9)
        fig.tight_layout()
        path = out / figure_name(c.knob, line)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(out: Path, runs: pd.DataFrame, labels: list[str], title: str) -> list[Curves]:
    """curves.md, curves.csv and a figure per line in `out` when the collection has a knob; nothing otherwise."""
    found = curves(runs, labels)
    if not found:
        return found
    (out / "curves.md").write_text(markdown(found, title))
    tables = [c.table for c in found if not c.table.empty]
    columns = ["knob", "line", "arch", "technique", "value", "n_seeds", "mean_diff", "ci95_low", "ci95_high",
               "p_ttest", "p_wilcoxon", "p_holm", "verdict", "detectable_effect", "seeds_needed"]
    (pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)).to_csv(
        out / "curves.csv", index=False)
    for c in found:
        if not c.table.empty:
            figures(out, c)
    return found

