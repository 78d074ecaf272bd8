"""Group statistics and seed-paired effects: scipy's t-distribution and tests, statsmodels' Holm."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import special, stats
from statsmodels.stats.multitest import multipletests

from mnist_compare.collect.runs import cell_name

ALPHA = 0.05
MIN_SEEDS = 3  # below this a group gets no interval: a t quantile on 1 degree of freedom is 12.7
# Accuracies are counts over at most a few thousand pairs: differences below this are float noise
# (0.83 - 0.81 != 0.82 - 0.80 in floating point), not variance.
TOLERANCE = 1e-9


def no_variance(values: np.ndarray) -> bool:
    return bool(np.ptp(values) <= TOLERANCE)


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean, for seed-paired differences (nan for fewer than two values)."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def accuracy_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, str]:
    """(low, high, note): a 95% interval for a group's accuracy that stays inside (0, 1).

    Student-t on the logit scale, back-transformed. Why: an accuracy is bounded, and with few seeds
    near 1.0 the plain mean ± t·s/√n crosses 1, which no accuracy can. On the logit scale the values
    are unbounded and closer to symmetric, and the logistic maps both ends back into (0, 1). In the
    report's range (0.8-0.9, std 0.015, 10 seeds) its ends typically lie within 0.001 of the plain
    t-interval's. A bootstrap interval also stays in bounds but with 3-10 seeds it cannot reach
    beyond the observed range and is too narrow. Its centre is the back-transformed mean logit, not
    exactly the mean.

    No interval (nan, nan and a note saying why) where one could only pretend precision: fewer than
    MIN_SEEDS seeds, no variance between seeds, an accuracy of exactly 0 or 1 (infinite logit).
    """
    n = len(values)
    if n < MIN_SEEDS:
        return math.nan, math.nan, f"n = {n} < {MIN_SEEDS} seeds: no interval"
    if no_variance(values):
        return math.nan, math.nan, f"no variance: every seed gives {values[0]:.4f}; no interval"
    if np.any((values <= 0) | (values >= 1)):
        return math.nan, math.nan, "an accuracy of exactly 0 or 1: no logit interval"
    low, high = t_interval(special.logit(values), level)
    return float(special.expit(low)), float(special.expit(high)), ""


def _mean_if_all(series: pd.Series | None) -> float:
    """The mean when every run has a finite value, else nan: a partly missing column is no figure."""
    if series is None:
        return math.nan
    values = pd.to_numeric(series, errors="coerce").to_numpy(float)
    return float(values.mean()) if len(values) and np.isfinite(values).all() else math.nan


def summarise_groups(runs: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per group: n, what was delivered, test accuracy (mean, sample std with ddof=1, 95% interval
    or a note why none), the report's best-epoch-on-test figure where the runs have it, digit
    accuracy, parameters, time per run."""
    rows = []
    for _, group in runs.groupby("group", sort=True):
        first = group.iloc[0]
        acc = group["test_acc"].to_numpy(float)
        low, high, note = accuracy_interval(acc)
        delivered = sorted(set(group["delivered"]))
        row = {k: first[k] for k in labels}
        row.update({
            "n": len(group),
            "delivered": delivered[0] if len(delivered) == 1 else "mixed: " + "; ".join(delivered),
            "test_acc_mean": acc.mean(),
            "test_acc_std": acc.std(ddof=1) if len(acc) > 1 else math.nan,
            "ci95_low": low,
            "ci95_high": high,
            "note": note,
        })
        best = group.get("best_test_acc")
        row["best_epoch_on_test_mean"] = _mean_if_all(best)
        row["best_epoch_on_test_std"] = (float(pd.to_numeric(best).std(ddof=1))
                                         if len(group) > 1 and math.isfinite(row["best_epoch_on_test_mean"])
                                         else math.nan)
        for extra in ("val_acc", "test_aux_acc", "test_rule_acc", "train_time_s"):
            row[f"{extra}_mean"] = _mean_if_all(group.get(extra))
        params = set(group["n_params"]) if "n_params" in group else set()
        row["n_params"] = params.pop() if len(params) == 1 else math.nan
        row.update({"sweep": ", ".join(dict.fromkeys(group["sweep"])), "context": first["context"],
                    "group": first["group"]})
        rows.append(row)
    return pd.DataFrame(rows)


def _effect_name(cell: tuple[bool, float], base: tuple[bool, float]) -> str:
    parts = [("WS" if cell[0] else "no WS")] if cell[0] != base[0] else []
    parts += [f"aux {cell[1]:g}" if cell[1] else "no aux"] if cell[1] != base[1] else []
    return " + ".join(parts)


def _pvalues(diff: np.ndarray) -> tuple[float, float]:
    """Paired t-test and Wilcoxon signed-rank p-values of differences that do vary."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        p_t = float(stats.ttest_1samp(diff, 0.0).pvalue)
        p_w = float(stats.wilcoxon(diff).pvalue) if np.any(np.abs(diff) > TOLERANCE) else 1.0
    return p_t, p_w


def paired_effects(runs: pd.DataFrame, labels: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Each (ws, aux) cell against the baseline of the same context (WS off/aux off, or WS on/aux
    off when WS off was not run), seed by seed; and, for every comparison that could not be made,
    why. A seed fixes the pairs, so the paired difference removes the data-set noise that the
    report's unpaired means carry.

    Holm family: every comparison with at least two seed pairs (fixed by which seeds were run, not
    by the results). One whose differences have no variance has no test (the t statistic is 0/0 or
    a constant over 0): its p-values stay empty and it counts in the family as p = 1, never
    significant. Dropping it instead would let a degenerate outcome shrink the family and loosen the
    threshold of the others.
    """
    context = [c for c in labels if c not in ("ws", "aux")]
    rows, notes = [], []
    for name, group in runs.groupby("context", sort=False):
        cells: dict[tuple[bool, float], pd.Series] = {}
        for (ws, aux), cell in group.groupby(["ws", "aux"], sort=True):
            if cell["group"].nunique() > 1:
                raise AssertionError(f"{name}: cell {cell_name(ws, aux)} holds several groups")
            cells[(bool(ws), float(aux))] = cell.set_index("pair")["test_acc"]
        base = next((b for b in ((False, 0.0), (True, 0.0)) if b in cells), None)
        if base is None:
            notes.append(f"{name}: no baseline cell (WS off, aux off; or WS on, aux off when WS off was not "
                         f"run) among {', '.join(cell_name(*c) for c in cells)}")
            continue
        if len(cells) == 1:
            notes.append(f"{name}: only the baseline cell ({cell_name(*base)}), nothing to compare it with")
            continue
        if len(cells[base]) < 2:
            notes.append(f"{name}: the baseline ({cell_name(*base)}) has only {len(cells[base])} seed: no paired test")
            continue
        for cell in sorted((c for c in cells if c != base), key=lambda c: (c[1], c[0])):  # Table-1 order
            common = cells[base].index.intersection(cells[cell].index)
            if len(common) < 2:
                notes.append(f"{name}, {cell_name(*cell)}: {len(common)} seed(s) in common with the baseline "
                             "(fewer than 2): no paired test")
                continue
            diff = (cells[cell][common] - cells[base][common]).to_numpy(float)
            row = {**{k: group.iloc[0][k] for k in context}, "effect": _effect_name(cell, base),
                   "baseline": cell_name(*base), "n_pairs": len(diff), "mean_diff": diff.mean()}
            if no_variance(diff):
                row.update(ci95_low=math.nan, ci95_high=math.nan, p_ttest=math.nan, p_wilcoxon=math.nan,
                           status=f"no variance: every seed differs by {diff[0]:+.4f}; no test, not significant")
            else:
                low, high = t_interval(diff)
                p_t, p_w = _pvalues(diff)
                row.update(ci95_low=low, ci95_high=high, p_ttest=p_t, p_wilcoxon=p_w,
                           status="" if math.isfinite(p_t) else "t-test gave no p-value")
            rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        tested = np.isfinite(table["p_ttest"].to_numpy(float))
        family = np.where(tested, table["p_ttest"].to_numpy(float), 1.0)  # untested: never significant
        _, adjusted, _, _ = multipletests(family, alpha=ALPHA, method="holm")
        table["p_holm"] = np.where(tested, adjusted, math.nan)
        table["verdict"] = [
            status or (f"{'gain' if d > 0 else 'loss'} (Holm p < {ALPHA:g})" if p < ALPHA
                       else f"not significant at {ALPHA:.0%} (Holm)")
            for status, d, p in zip(table.pop("status"), table["mean_diff"], table["p_holm"], strict=True)
        ]
    return table, notes
