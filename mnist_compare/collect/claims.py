"""The 2019 report's conclusions ("Results and conclusions") as seed-paired tests on a sweep.

Each claim below is the report's sentence and the differences of cells that test it. Seed s gives
every cell the same training and test pairs, so a claim about two cells is tested on their
seed-by-seed difference (paired t-test, scipy), never on unpaired means. Every comparison of a
sweep is one Holm family (statsmodels). A comparison's verdict:

- **holds**: Holm-adjusted p < ALPHA and the effect goes the report's way;
- **contradicted**: Holm-adjusted p < ALPHA and it goes the other way;
- **not shown**: neither; with the smallest effect these seeds could detect (80% power, at the
  family's level ALPHA / m) and the seeds the observed effect would need.

A claim holds when every one of its comparisons holds, is contradicted when one is contradicted,
and is not shown otherwise. "Close" and "about" are read as a band of ±CLOSE around the report's
figure: such a claim holds when an equivalence test (two one-sided t-tests, TOST) puts the
difference inside the band, and is contradicted when a one-sided t-test puts it outside.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.stats.multitest import multipletests

from mnist_compare.collect.fmt import DASH, num
from mnist_compare.collect.runs import Sweep, cell_name
from mnist_compare.collect.stats import (
    ALPHA,
    MIN_SEEDS,
    accuracy_interval,
    detectable,
    no_variance,
    seeds_needed,
    t_interval,
)

AUX = 0.5  # the report's auxiliary weight
ARCHS = ("shallow", "deep", "conv")
CELLS = {"no technique": (False, 0.0), "WS": (True, 0.0), "aux": (False, AUX), "WS + aux": (True, AUX)}
CLOSE = 0.01  # "close to", "about": within 1 pp (the report's stds are 0.5-1.8 pp)
HOLDS, NOT_SHOWN, CONTRADICTED = "holds", "not shown", "contradicted"

Cell = tuple[str, str]  # (architecture, a key of CELLS)
Contrast = dict[Cell, float]  # a weighted sum of cells' accuracies, seed by seed


@dataclass(frozen=True)
class Claim:
    key: str
    says: str  # the report's conclusion, in words
    expect: str  # "gain": > target; "loss": < target; "close": within target ± CLOSE; "above": digit accuracy > target
    parts: Callable[[pd.DataFrame], list[tuple[str, Contrast]]]  # (what is compared, how), from the cells' means
    target: float = 0.0


def _vs(a: Cell, b: Cell) -> Contrast:
    return {a: 1.0, b: -1.0}


def _second_best(acc: pd.DataFrame) -> str:
    """The better MLP with no technique (by mean): whom the ConvNet is ~3 pp above."""
    return max(("shallow", "deep"), key=lambda a: acc[(a, "no technique")].mean())


CLAIMS = (
    Claim("conv_best", "The ConvNet is the best architecture in every technique cell", "gain",
          lambda acc: [(f"{c}: conv - {a}", _vs(("conv", c), (a, c))) for c in CELLS for a in ("shallow", "deep")]),
    Claim("conv_gap_3pp", "With no technique, the ConvNet is about 3 pp above the second-best architecture",
          "close", lambda acc: [(f"no technique: conv - {_second_best(acc)} (the second best)",
                                 _vs(("conv", "no technique"), (_second_best(acc), "no technique")))], 0.03),
    Claim("shallow_over_deep", "With no technique, the shallow MLP is slightly above the deep MLP", "gain",
          lambda acc: [("no technique: shallow - deep", _vs(("shallow", "no technique"), ("deep", "no technique")))]),
    Claim("ws_improves", "Weight sharing alone improves each architecture", "gain",
          lambda acc: [(f"{a}: WS - no technique", _vs((a, "WS"), (a, "no technique"))) for a in ARCHS]),
    Claim("aux_improves", "The auxiliary loss alone improves each architecture", "gain",
          lambda acc: [(f"{a}: aux - no technique", _vs((a, "aux"), (a, "no technique"))) for a in ARCHS]),
    Claim("aux_beats_ws", "The auxiliary loss alone helps more than weight sharing alone", "gain",
          lambda acc: [(f"{a}: aux - WS", _vs((a, "aux"), (a, "WS"))) for a in ARCHS]),
    Claim("both_best", "WS + aux is the best of the four cells for each architecture", "gain",
          lambda acc: [(f"{a}: WS + aux - {c}", _vs((a, "WS + aux"), (a, c)))
                       for a in ARCHS for c in ("no technique", "WS", "aux")]),
    Claim("not_additive", "The gains are not additive (diminishing returns: a negative WS x aux interaction)",
          "loss", lambda acc: [(f"{a}: (WS + aux) - aux - WS + no technique",
                                {(a, "WS + aux"): 1.0, (a, "aux"): -1.0, (a, "WS"): -1.0, (a, "no technique"): 1.0})
                               for a in ARCHS]),
    Claim("aux_close_to_both", "The auxiliary loss alone comes close to both techniques combined", "close",
          lambda acc: [(f"{a}: WS + aux - aux", _vs((a, "WS + aux"), (a, "aux"))) for a in ARCHS]),
    Claim("conv_digits_90", "The ConvNet's pipes recognise digits above 90% (with the auxiliary loss)", "above",
          lambda acc: [(f"conv, {c}: digit accuracy", {("conv", c): 1.0}) for c in ("aux", "WS + aux")], 0.9),
    Claim("deep_close_to_conv", "The deep MLP with both techniques comes close to the ConvNet with both", "close",
          lambda acc: [("WS + aux: deep - conv", _vs(("deep", "WS + aux"), ("conv", "WS + aux")))]),
)

EXPECT = {"gain": "> {t:g}", "loss": "< {t:g}", "close": "within {t:+.4f} ± " + f"{CLOSE:.4f}",
          "above": "digit accuracy > {t:g}"}


@dataclass
class Cells:
    """One block's twelve cells over the seeds they share: test and digit accuracy, and the flag."""
    acc: pd.DataFrame  # index: seed pair; columns: Cell
    digits: pd.DataFrame
    not_learned: pd.DataFrame


def gather(runs: pd.DataFrame) -> tuple[Cells | None, str]:
    """The protocol's cells of one block of runs (one group per cell), or None and why not."""
    frames, missing = {}, []
    for arch in ARCHS:
        for name, (ws, aux) in CELLS.items():
            cell = runs[(runs["arch"] == arch) & (runs["ws"] == ws) & np.isclose(runs["aux"], aux)]
            if cell.empty:
                missing.append(f"{arch} {cell_name(ws, aux)}")
            else:
                frames[(arch, name)] = cell.set_index("pair")
    if missing:
        listed = "; ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        return None, f"missing cells: {listed} (the report's protocol: archs shallow, deep, conv x ws true, false " \
                     f"x aux 0, {AUX:g})"
    common = sorted(set.intersection(*(set(f.index) for f in frames.values())), key=str)
    if len(common) < MIN_SEEDS:
        return None, f"only {len(common)} seed(s) common to all twelve cells: at least {MIN_SEEDS} needed"

    def table(column: str, default: float) -> pd.DataFrame:
        return pd.DataFrame({k: (f.loc[common, column] if column in f else pd.Series(default, index=common))
                             for k, f in frames.items()}).astype(float)

    flags = pd.DataFrame({k: (f.loc[common, "learned_nothing"] if "learned_nothing" in f
                              else pd.Series(False, index=common)) for k, f in frames.items()}).astype(bool)
    return Cells(table("test_acc", math.nan), table("test_aux_acc", math.nan), flags), ""


def _tests(values: np.ndarray, expect: str, target: float) -> float:
    """The p-value a comparison brings to the family; the test fits the claim's kind (see the module)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if expect == "close":
            low, high = target - CLOSE, target + CLOSE
            inside = max(stats.ttest_1samp(values, low, alternative="greater").pvalue,
                         stats.ttest_1samp(values, high, alternative="less").pvalue)
            mean = values.mean()
            outside = (stats.ttest_1samp(values, high, alternative="greater").pvalue if mean > high else
                       stats.ttest_1samp(values, low, alternative="less").pvalue if mean < low else 1.0)
            return float(min(inside, outside))
        return float(stats.ttest_1samp(values, target).pvalue)


def _part(cells: Cells, contrast: Contrast, expect: str, target: float) -> dict:
    """One comparison: its estimate, 95% CI, raw p and the figures power needs."""
    row = {"n_seeds": len(cells.acc), "not_learned": int(cells.not_learned[list(contrast)].to_numpy().sum())}
    if expect == "above":  # a level, not a difference: on the logit scale, as the groups' intervals are
        (cell,) = contrast
        values = cells.digits[cell].to_numpy(float)
        if not np.isfinite(values).all():
            return {**row, "estimate": math.nan, "ci95_low": math.nan, "ci95_high": math.nan, "p": math.nan,
                    "note": "no digit accuracy recorded: untested"}
        low, high, note = accuracy_interval(values)
        row.update({"estimate": values.mean(), "ci95_low": low, "ci95_high": high})
        if note:
            return {**row, "p": math.nan, "note": note + ": untested"}
        logits = special.logit(values)
        p = _tests(logits, "gain", float(special.logit(target)))
        return {**row, "p": p, "note": "", "_scale": (logits - special.logit(target), "two-sided")}
    values = sum(w * cells.acc[c].to_numpy(float) for c, w in contrast.items())
    low, high = t_interval(values)
    row.update({"estimate": values.mean(), "ci95_low": low, "ci95_high": high})
    if no_variance(values):
        return {**row, "p": math.nan, "note": f"no variance: every seed gives {values[0]:+.4f}; untested"}
    p = _tests(values, expect, target)
    if expect == "close":  # power of the nearer one-sided test: distance to the band's nearer edge
        distance = min(values.mean() - (target - CLOSE), target + CLOSE - values.mean())
        return {**row, "p": p, "note": "", "_scale": (values - values.mean() + abs(distance), "larger")}
    return {**row, "p": p, "note": "", "_scale": (values - target, "two-sided")}


def _verdict(expect: str, target: float, estimate: float, p_holm: float) -> str:
    if not p_holm < ALPHA:
        return NOT_SHOWN
    if expect == "close":
        return HOLDS if abs(estimate - target) <= CLOSE else CONTRADICTED
    right = estimate < target if expect == "loss" else estimate > target
    return HOLDS if right else CONTRADICTED


def _power(row: dict, scale: tuple[np.ndarray, str] | None, alpha: float, expect: str, target: float) -> None:
    """For a comparison not shown: the smallest effect these seeds detect with 80% power at the
    family's level, and the seeds the observed effect would need (`stats.power`: the paired t's noncentral
    distribution, which statsmodels' TTestPower cannot evaluate at a family's level for few seeds)."""
    row["detectable_effect"], row["seeds_needed"] = math.nan, math.nan
    if row["verdict"] != NOT_SHOWN or scale is None:
        return
    shifted, alternative = scale
    sd = float(np.std(shifted, ddof=1))
    smallest = detectable(sd, len(shifted), alpha, alternative)
    if expect == "above":  # logit units back to accuracy, at the reference level
        smallest = float(special.expit(special.logit(target) + smallest) - target)
    row["detectable_effect"] = smallest
    row["seeds_needed"] = seeds_needed(float(shifted.mean()), sd, alpha, alternative)


def conclusions(cells: Cells) -> pd.DataFrame:
    """Every claim's comparisons on one block's cells: one row each, with Holm over all of them."""
    rows = []
    for claim in CLAIMS:
        for part, contrast in claim.parts(cells.acc):
            rows.append({"claim": claim.key, "says": claim.says, "expect": EXPECT[claim.expect].format(t=claim.target),
                         "comparison": part, **_part(cells, contrast, claim.expect, claim.target),
                         "_claim": claim})
        used = {c for _, contrast in claim.parts(cells.acc) for c in contrast}
        for row in rows[-len(claim.parts(cells.acc)):]:  # runs that learned nothing among all the claim compares
            row["claim_not_learned"] = int(cells.not_learned[sorted(used)].to_numpy().sum())
    table = pd.DataFrame(rows)
    tested = np.isfinite(table["p"].to_numpy(float))
    _, adjusted, _, _ = multipletests(np.where(tested, table["p"], 1.0), alpha=ALPHA, method="holm")
    table["p_holm"] = np.where(tested, adjusted, math.nan)
    alpha = ALPHA / len(table)  # the family's level: Holm's first step, ALPHA over the m comparisons
    table["verdict"] = [_verdict(c.expect, c.target, e, p) for c, e, p in
                        zip(table["_claim"], table["estimate"], table["p_holm"], strict=True)]
    scales = table.pop("_scale") if "_scale" in table else [None] * len(table)
    records = table.to_dict("records")
    for row, scale in zip(records, scales, strict=True):
        scale = scale if isinstance(scale, tuple) else None
        _power(row, scale, alpha, row["_claim"].expect, row["_claim"].target)
    table = pd.DataFrame(records).drop(columns="_claim")
    table["claim_verdict"] = table.groupby("claim", sort=False)["verdict"].transform(_claim_verdict)
    return table


def _claim_verdict(parts: pd.Series) -> str:
    if (parts == CONTRADICTED).any():
        return CONTRADICTED
    return HOLDS if (parts == HOLDS).all() else NOT_SHOWN


def blocks(sweep: Sweep) -> list[tuple[str, pd.DataFrame]]:
    """The collection split by every setting that tells groups apart other than arch, ws and aux:
    each block is one sweep's worth of cells (the whole collection when nothing else differs)."""
    other = [k for k in sweep.labels if k not in ("arch", "ws", "aux")]
    if not other:
        return [("", sweep.runs)]
    return [(" ".join(f"{k}={v}" for k, v in zip(other, key if isinstance(key, tuple) else (key,), strict=True)),
             block) for key, block in sweep.runs.groupby(other, sort=False)]


def evaluate(sweep: Sweep) -> tuple[pd.DataFrame, list[str]]:
    """Every block's conclusions (column `block`), and for blocks that cannot have them, why."""
    tables, why_not = [], []
    for name, runs in blocks(sweep):
        cells, why = gather(runs)
        if cells is None:
            why_not.append(f"{name + ': ' if name else ''}{why}")
            continue
        tables.append(conclusions(cells).assign(block=name))
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), why_not


def _seeds(value: float) -> str:
    if math.isinf(value):
        return "never (observed 0)"
    return DASH if not math.isfinite(value) else f"{value:.0f}"


def summary_view(table: pd.DataFrame) -> pd.DataFrame:
    """One line per claim: its verdict, how its comparisons came out, the runs that learned nothing."""
    rows = []
    for key, parts in table.groupby("claim", sort=False):
        counts = parts["verdict"].value_counts()
        rows.append({"claim (the report)": parts["says"].iloc[0], "verdict": f"**{parts['claim_verdict'].iloc[0]}**",
                     "comparisons": ", ".join(f"{counts.get(v, 0)} {v}" for v in (HOLDS, NOT_SHOWN, CONTRADICTED)
                                              if counts.get(v, 0)),
                     "runs that learned nothing": int(parts["claim_not_learned"].iloc[0]), "key": key})
    return pd.DataFrame(rows)


def detail_view(table: pd.DataFrame) -> pd.DataFrame:
    """Every comparison: a difference signed, a level (digit accuracy) as an accuracy."""
    levels = [e.startswith("digit") for e in table["expect"]]
    return pd.DataFrame({
        "claim": table["claim"], "comparison": table["comparison"], "expected": table["expect"],
        "n": table["n_seeds"],
        "effect": [num(e, ".4f" if level else "+.4f") for e, level in zip(table["estimate"], levels, strict=True)],
        "95% CI": [DASH if not math.isfinite(lo) else "[{:{f}}, {:{f}}]".format(lo, hi, f=".4f" if level else "+.4f")
                   for lo, hi, level in zip(table["ci95_low"], table["ci95_high"], levels, strict=True)],
        "p": [num(p, ".3g") for p in table["p"]], "p (Holm)": [num(p, ".3g") for p in table["p_holm"]],
        "verdict": table["verdict"],
        "smallest detectable (80% power)": [num(d, ".4f") for d in table["detectable_effect"]],
        "seeds needed for the observed effect": [_seeds(v) for v in table["seeds_needed"]],
        "note": [", ".join(filter(None, [n, f"{b} run(s) that learned nothing" if b else ""]))
                 for n, b in zip(table["note"], table["not_learned"], strict=True)],
    })


METHOD = (
    "Each conclusion of the report's \"Results and conclusions\" is tested on the seeds common to the twelve "
    "cells of the protocol (archs shallow, deep, conv x WS off/on x aux off/{aux:g}), on last-epoch test "
    "accuracy. Seed s gives every cell the same pairs, so every comparison is a seed-by-seed difference of cells "
    "(paired t-test; the digit-accuracy claim: one-sample t-test on the logit scale, its interval the groups' "
    "logit t interval). \"Close\" and \"about\" mean within ±{close:.4f} of the report's figure: equivalence "
    "(two one-sided t-tests) for **holds**, a one-sided t-test beyond the band for **contradicted**. All "
    "comparisons of a block are one Holm family (statsmodels); a comparison **holds** when its Holm-adjusted p "
    "< {alpha:g} and it goes the report's way, is **contradicted** when it goes the other way, and is **not "
    "shown** otherwise. A claim holds when all its comparisons hold and is contradicted when one is. For each "
    "comparison not shown: the smallest true effect these seeds detect with 80% power at the family's level "
    "({alpha:g} / m, m the family's size; power of the paired t from its noncentral distribution, equal to "
    "statsmodels' TTestPower wherever that gives a figure; for a band, the distance from its "
    "nearer edge) and the seeds the observed effect would need. \"Runs that learned nothing\": runs among the "
    "compared ones that predicted one class or stayed at chance throughout (flagged in runs.csv), averaged in.")


def markdown(table: pd.DataFrame, why_not: list[str], title: str) -> str:
    text = [f"# {title}", "", METHOD.format(aux=AUX, close=CLOSE, alpha=ALPHA), ""]
    for name, block in (table.groupby("block", sort=False) if not table.empty else []):
        text += [f"## {name}", ""] if name else []
        text += [f"Family: {len(block)} comparisons on {block['n_seeds'].iloc[0]} seeds.", "",
                 summary_view(block).drop(columns="key").to_markdown(index=False, disable_numparse=True), "",
                 detail_view(block).to_markdown(index=False, disable_numparse=True), ""]
    if why_not:
        text += ["No conclusions for:" if not table.empty else "No conclusions: the report's cells are not all "
                 "here with enough seeds.", "", *(f"- {w}" for w in why_not), ""]
    return "\n".join(text)


def write(out: Path, sweep: Sweep) -> tuple[pd.DataFrame, list[str]]:
    """conclusions.md and conclusions.csv in `out` (the Markdown says why when no block has the cells)."""
    table, why_not = evaluate(sweep)
    folders = ", ".join(str(r) for r in sweep.roots)
    (out / "conclusions.md").write_text(markdown(table, why_not, f"The report's conclusions on {folders}"))
    columns = ["block", "claim", "says", "comparison", "expect", "n_seeds", "estimate", "ci95_low", "ci95_high", "p",
               "p_holm", "verdict", "claim_verdict", "not_learned", "claim_not_learned", "detectable_effect",
               "seeds_needed", "note"]
    written = table[columns] if not table.empty else pd.DataFrame(columns=columns)
    written.to_csv(out / "conclusions.csv", index=False)
    return table, why_not


def robustness(collections: list[tuple[str, Sweep]]) -> pd.DataFrame:
    """Each claim's verdict (and each comparison's) on several collections, side by side (long form)."""
    tables = []
    for label, sweep in collections:
        table, why_not = evaluate(sweep)
        if table.empty:
            raise ValueError(f"{label}: {'; '.join(why_not)}")
        tables.append(table.assign(collection=label))
    return pd.concat(tables, ignore_index=True)


def _replication_summary(long: pd.DataFrame, parts: pd.DataFrame, says: pd.Series) -> list[str]:
    """The verdicts read across collections, in words: what holds everywhere, what nowhere, what moves."""
    def listed(mask: pd.Series) -> list[str]:
        found: dict[str, list[str]] = {}
        for (claim, comparison), hit in mask.items():
            if hit:
                found.setdefault(claim, []).append(comparison)
        return [f"  - {says[c]} (`{c}`): {'; '.join(v)}" for c, v in found.items()] or ["  - none"]

    whole = long.drop_duplicates(["collection", "claim"]).groupby("claim", sort=False)["claim_verdict"]
    everywhere = [f"{says[c]} (`{c}`)" for c, v in whole if (v == HOLDS).all()]
    return [
        "## Summary", "",
        f"- **Claims that hold in every collection**: {', '.join(everywhere) or 'none'}.",
        "- **Comparisons that hold in every collection** (parts of claims that, as a whole, may not hold):",
        *listed((parts == HOLDS).all(axis=1)),
        "- **Comparisons contradicted in some collection**:",
        *listed((parts == CONTRADICTED).any(axis=1)),
        "- **Comparisons shown in no collection** (each collection's conclusions.md gives the smallest effect its "
        "seeds could detect and the seeds the observed one would need):",
        *listed((parts == NOT_SHOWN).all(axis=1)),
        "- **Comparisons whose verdict depends on the collection** (fragile):",
        *listed(parts.nunique(axis=1) > 1),
    ]


def robustness_markdown(long: pd.DataFrame, sources: dict[str, str]) -> str:
    labels = list(dict.fromkeys(long["collection"]))
    claims = long.drop_duplicates(["collection", "claim"]).pivot(index="claim", columns="collection",
                                                                 values="claim_verdict")
    held = long.assign(held=long["verdict"] == HOLDS).groupby(["claim", "collection"])["held"].agg(["sum", "size"])
    says = long.drop_duplicates("claim").set_index("claim")["says"]
    order = list(dict.fromkeys(long["claim"]))
    by_claim = pd.DataFrame({"claim (the report)": [says[k] for k in order],
                             **{c: [f"**{claims.loc[k, c]}** ({held.loc[(k, c), 'sum']} of {held.loc[(k, c), 'size']} "
                                    "hold)" for k in order] for c in labels}})
    parts = long.pivot_table(index=["claim", "comparison"], columns="collection", values="verdict",
                             aggfunc="first", sort=False)
    by_part = pd.DataFrame({"claim": [k for k, _ in parts.index], "comparison": [p for _, p in parts.index],
                            **{c: [str(v) for v in parts[c]] for c in labels}})
    return "\n".join([
        "# Which of the report's conclusions replicate", "",
        "Each claim of the report tested on each collection as in its conclusions.md (same tests, its own Holm "
        "family; written by `python -m mnist_compare.collect robustness`): a claim holds when all its comparisons "
        "hold, is contradicted when one is, and is not shown otherwise; beside each verdict, how many of its "
        "comparisons hold. Collections:", "",
        *(f"- **{label}**: {src}" for label, src in sources.items()), "",
        by_claim.to_markdown(index=False, disable_numparse=True), "", *_replication_summary(long, parts, says), "",
        "## Each comparison", "",
        by_part.to_markdown(index=False, disable_numparse=True), ""])

