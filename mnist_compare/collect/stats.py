"""Group statistics and seed-paired effects, with scipy's t-distribution and tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean (nan for fewer than two values)."""
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def summarise_groups(runs: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per group: n, final-epoch test accuracy (mean, sample std with ddof=1, 95% CI), the
    report's best-epoch-on-test figure apart, digit accuracy, parameters, time per run."""
    rows = []
    for values, group in runs.groupby(labels, sort=True, dropna=False, observed=True):
        acc = group["test_acc"].to_numpy(float)
        low, high = t_interval(acc)
        row = dict(zip(labels, values if isinstance(values, tuple) else (values,), strict=False))
        row.update({
            "n": len(group),
            "test_acc_mean": acc.mean(),
            "test_acc_std": acc.std(ddof=1) if len(acc) > 1 else float("nan"),
            "ci95_low": low,
            "ci95_high": high,
            "best_epoch_on_test_mean": group["best_test_acc"].mean(),
            "best_epoch_on_test_std": group["best_test_acc"].std(ddof=1),
            "test_aux_acc_mean": group["test_aux_acc"].mean(),
            "n_params": int(group["n_params"].iloc[0]),
            "train_time_s_mean": group["train_time_s"].mean(),
        })
        for extra in ("val_acc", "test_rule_acc"):  # validation; the fixed digit rule, for reference
            if extra in group and group[extra].notna().any():
                row[f"{extra}_mean"] = group[extra].mean()
        rows.append(row)
    summary = pd.DataFrame(rows)
    if isinstance(runs["arch"].dtype, pd.CategoricalDtype):  # keep the report's row order
        summary["arch"] = pd.Categorical(summary["arch"], runs["arch"].cat.categories, ordered=True)
    return summary


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values: the family of comparisons, not each alone, at 5%."""
    order = np.argsort(pvalues)
    adjusted = np.empty_like(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(pvalues) - rank) * pvalues[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def paired_effects(runs: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Each (ws, aux) cell against the baseline of the same context (WS off/aux off, or WS on/
    aux off when only WS on was swept), seed by seed.

    A seed fixes the data, so the paired difference removes the data-set noise that the
    report's unpaired means carry.
    """
    context = [c for c in labels if c not in ("ws", "aux")]
    rows = []
    for ctx, group in runs.groupby(context, sort=True, dropna=False, observed=True):
        acc = group.pivot_table(index="seed", columns=["ws", "aux"], values="test_acc", aggfunc="first")
        # WS off/aux off as in Table 1; a sweep with WS on only (the aux curve) pairs with WS on/aux 0
        base = next((b for b in ((False, 0.0), (True, 0.0)) if b in acc.columns), None)
        if base is None:
            continue
        for ws, aux in sorted(c for c in acc.columns if c != base):
            both = acc[[base, (ws, aux)]].dropna()
            diff = (both[(ws, aux)] - both[base]).to_numpy(float)
            if len(diff) < 2:
                continue
            low, high = t_interval(diff)
            effect = ("WS + aux" if ws and aux and not base[0] else "WS" if ws and not base[0] else "aux")
            effect += f" {aux:g}" if aux else ""
            rows.append({
                **dict(zip(context, ctx if isinstance(ctx, tuple) else (ctx,), strict=False)),
                "effect": effect, "n_pairs": len(diff), "mean_diff": diff.mean(),
                "ci95_low": low, "ci95_high": high,
                "baseline": f"WS {'on' if base[0] else 'off'}, aux off",
                "p_ttest": float(stats.ttest_rel(both[(ws, aux)], both[base]).pvalue),
                "p_wilcoxon": float(stats.wilcoxon(diff).pvalue) if np.any(diff) else 1.0,
            })
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table["p_ttest"].to_numpy(float))
        table["holds"] = np.where(
            table["p_holm"] < 0.05, np.where(table["mean_diff"] > 0, "yes: gain", "yes: loss"), "not shown"
        )
    return table
