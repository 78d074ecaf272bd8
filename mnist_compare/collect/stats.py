"""Group statistics and seed-paired effects: scipy's t-distribution and tests, statsmodels' Holm."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from statsmodels.stats.multitest import multipletests

from mnist_compare.collect.runs import ALIASES, UNSET, cell_name, show
from mnist_compare.run.identity import SEED_KEYS

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


def not_learned(runs: pd.DataFrame) -> str:
    """Words for the runs among `runs` that learned nothing ("" when none): averaged in, never unsaid."""
    if "learned_nothing" not in runs or not runs["learned_nothing"].any():
        return ""
    bad = runs[runs["learned_nothing"]]
    seeds = ", ".join(str(s) for s in bad["seed"])
    return (f"{len(bad)} of {len(runs)} runs learned nothing (seed{'s' * (len(bad) > 1)} {seeds}: "
            f"{bad['learned_nothing_why'].iloc[0]}{', ...' if len(bad) > 1 else ''}), averaged in")


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
        row["note"] = "; ".join(filter(None, [note, not_learned(group)]))
        row.update({"sweep": ", ".join(dict.fromkeys(group["sweep"])), "context": first["context"],
                    "group": first["group"]})
        rows.append(row)
    return pd.DataFrame(rows)


def wilcoxon_floor(n: int) -> float:
    """The smallest two-sided p-value a Wilcoxon signed-rank test on n pairs can give (every
    difference of one sign): 2 / 2**n for scipy's exact test, 0.25 for 3 pairs, 0.0625 for 5."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(np.arange(1.0, n + 1)).pvalue) if n >= 1 else 1.0


def wilcoxon_text(p: float, n: int) -> str:
    """A Wilcoxon p-value as a table shows it: none where n pairs cannot reach ALPHA at all."""
    floor = wilcoxon_floor(n)
    if floor >= ALPHA:
        return f"— (n = {n}: cannot go below {floor:.3g})"
    return "—" if not math.isfinite(p) else format(p, ".3g")


POWER = 0.8


def power(effect_size: float, n: float, alpha: float, alternative: str = "two-sided") -> float:
    """Power of a paired (one-sample) t-test on n pairs at `alpha` for a standardised effect, the
    figure statsmodels' TTestPower().power gives where it gives one. The noncentral t is integrated
    over its chi-square: TTestPower, and scipy's nct, return nan for few seeds and a
    large noncentrality (3 seeds at a family's level of 0.05/37: every effect size from 5 to 16), and
    TTestPower's solve_power then returns a wrong root instead of failing."""
    df, nc = n - 1, effect_size * math.sqrt(n)
    crit = stats.t.isf(alpha / 2 if alternative == "two-sided" else alpha, df)

    u = (_NODES + 1) / 2  # chi-square quantiles of the draw: Gauss-Legendre on (0, 1), smooth in u
    scale = crit * np.sqrt(stats.chi2.ppf(u, df) / df)
    beyond = stats.norm.sf(scale - nc) + (stats.norm.cdf(-scale - nc) if alternative == "two-sided" else 0.0)
    return float(np.dot(_WEIGHTS, beyond) / 2)


_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(400)


def detectable(sd: float, n: int, alpha: float, alternative: str = "two-sided") -> float:
    """The smallest true mean difference a paired t-test on n pairs detects with POWER at `alpha`,
    in the units of `sd`, the differences' standard deviation."""
    if n < 2 or not (math.isfinite(sd) and sd > 0):
        return math.nan
    return float(optimize.brentq(lambda e: power(e, n, alpha, alternative) - POWER, 1e-9, 1e4)) * sd


def seeds_needed(effect: float, sd: float, alpha: float, alternative: str = "two-sided") -> float:
    """Seeds a paired t-test needs to detect `effect` with POWER at `alpha`, if it is the true one
    (inf for an effect of 0, or beyond a million; nan without a spread to size it by)."""
    if not (math.isfinite(sd) and sd > 0 and math.isfinite(effect)):
        return math.nan
    size = abs(effect) / sd
    if size < 1e-3 or power(size, 10**6, alpha, alternative) < POWER:  # more than a million seeds
        return math.inf
    low = 2
    if power(size, low, alpha, alternative) >= POWER:
        return float(low)
    n = optimize.brentq(lambda m: power(size, m, alpha, alternative) - POWER, low, 10**6)
    return float(math.ceil(n - 1e-9))


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
        flags: dict[tuple[bool, float], pd.Series] = {}
        for (ws, aux), cell in group.groupby(["ws", "aux"], sort=True):
            if cell["group"].nunique() > 1:
                raise AssertionError(f"{name}: cell {cell_name(ws, aux)} holds several groups")
            cells[(bool(ws), float(aux))] = cell.set_index("pair")["test_acc"]
            flags[(bool(ws), float(aux))] = _flags(cell)
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
            rows.append({**{k: group.iloc[0][k] for k in context}, "effect": _effect_name(cell, base),
                         "baseline": cell_name(*base), **_paired_test(diff),
                         "_not_learned": int(flags[cell][common].sum() + flags[base][common].sum())})
    return _holm(pd.DataFrame(rows)), notes


def _paired_test(diff: np.ndarray) -> dict[str, Any]:
    """n, mean, 95% CI, paired t and Wilcoxon p of seed-paired differences; none where they have no
    variance (the t statistic is 0/0 or a constant over 0), with the reason in `status`."""
    row: dict[str, Any] = {"n_pairs": len(diff), "mean_diff": diff.mean()}
    if no_variance(diff):
        return {**row, "ci95_low": math.nan, "ci95_high": math.nan, "p_ttest": math.nan, "p_wilcoxon": math.nan,
                "status": f"no variance: every seed differs by {diff[0]:+.4f}; no test, not significant"}
    low, high = t_interval(diff)
    p_t, p_w = _pvalues(diff)
    return {**row, "ci95_low": low, "ci95_high": high, "p_ttest": p_t, "p_wilcoxon": p_w,
            "status": "" if math.isfinite(p_t) else "t-test gave no p-value"}


def _holm(table: pd.DataFrame) -> pd.DataFrame:
    """Holm-adjust the t-test p-values of one family (an untested row counts as p = 1, never
    significant) and replace `status` by a verdict."""
    if table.empty:
        return table
    tested = np.isfinite(table["p_ttest"].to_numpy(float))
    family = np.where(tested, table["p_ttest"].to_numpy(float), 1.0)  # untested: never significant
    _, adjusted, _, _ = multipletests(family, alpha=ALPHA, method="holm")
    table["p_holm"] = np.where(tested, adjusted, math.nan)
    table["verdict"] = [
        (status or (f"{'gain' if d > 0 else 'loss'} (Holm p < {ALPHA:g})" if p < ALPHA
                    else f"not significant at {ALPHA:.0%} (Holm)")) + including(bad)
        for status, d, p, bad in zip(table.pop("status"), table["mean_diff"], table["p_holm"],
                                     table.pop("_not_learned") if "_not_learned" in table else [0] * len(table),
                                     strict=True)
    ]
    return table


def including(bad: int) -> str:
    """What a verdict adds when runs that learned nothing are among those it compares."""
    return f"; includes {bad} run{'s' * (bad > 1)} that learned nothing" if bad else ""


def _flags(cell: pd.DataFrame) -> pd.Series:
    """Per seed pair: did this run learn nothing (see runs.did_not_learn)."""
    flag = cell["learned_nothing"] if "learned_nothing" in cell else pd.Series(False, index=cell.index)
    return pd.Series(flag.to_numpy(bool), index=cell["pair"])


def _settings(run: pd.Series) -> dict[str, Any]:
    """A run's architecture label and flattened config (canonical already), seeds aside: what makes its group."""
    return {"arch": run["arch"], **{k: v for k, v in run["flat"].items() if k not in SEED_KEYS}}


def _copy_of(key: str, config: dict[str, Any]) -> str | None:
    """The key that `key` is an interpolated copy of in `config` (`model.pipe.dropout` of
    `arch.pipe.dropout`, `model.weight_sharing` of `ws`), or None."""
    head, _, rest = key.partition(".")
    source = ALIASES.get(key) or (f"arch.{rest}" if head != "arch" and rest else None)
    return source if source is not None and source in config and config[source] == config.get(key) else None


def _changes(base: dict[str, Any], variant: dict[str, Any]) -> list[str]:
    """`key: baseline -> variant` for every setting in which two configs differ (unset counts as a value),
    each once: a copy made by interpolation (`model.pipe.*` of `arch.pipe.*`) is left out when it
    follows its source in both configs."""
    keys = [k for k in sorted(set(base) | set(variant)) if base.get(k, UNSET) != variant.get(k, UNSET)]
    copies = {k for k in keys if (src := _copy_of(k, variant)) is not None and src in keys
              and (_copy_of(k, base) == src or (k not in base and src not in base))}
    return [f"{k}: {show(base[k]) if k in base else UNSET} -> {show(variant[k]) if k in variant else UNSET}"
            for k in keys if k not in copies]


BY_DIFFERENCE = "paired by the smallest config difference; --pair VARIANT=BASE to choose"


def _counterpart(first: pd.Series, bases: list[pd.DataFrame],
                 pairs: dict[str, str] | None = None) -> tuple[pd.DataFrame | None, str]:
    """The baseline group paired with a group whose first run is `first`, or None and why not.

    Same ws and aux; the same architecture, or the one `pairs` names for it (`--pair deep_drop=deep`);
    a variant architecture that the baseline folder does not have (a new arch file) is paired with
    the baseline group, of any architecture, whose config differs least from it (said in the
    returned text, BY_DIFFERENCE)."""
    pairs = pairs or {}
    arch = pairs.get(first["arch"], first["arch"])
    same = [(len(_changes(_settings(g.iloc[0]), _settings(first))), g) for g in bases
            if (g.iloc[0]["arch"], g.iloc[0]["ws"], g.iloc[0]["aux"]) == (arch, first["ws"], first["aux"])]
    how = ""
    if not same and first["arch"] not in pairs and not any(g.iloc[0]["arch"] == arch for g in bases):
        same = [(len(_changes(_settings(g.iloc[0]), _settings(first))), g) for g in bases
                if (g.iloc[0]["ws"], g.iloc[0]["aux"]) == (first["ws"], first["aux"])]
        how = BY_DIFFERENCE
    if not same:
        return None, f"the baseline folder has no group with arch={arch}, ws={show(first['ws'])}, " \
                     f"aux={show(first['aux'])}"
    fewest = min(n for n, _ in same)
    tied = [g for n, g in same if n == fewest]
    if len(tied) > 1:
        return None, (f"{len(tied)} baseline groups differ from it in {fewest} setting(s) each "
                      f"({'; '.join(g.iloc[0]['context'] for g in tied)}): no single counterpart, not paired")
    return tied[0], how


def variant_effects(runs: pd.DataFrame, folders: Sequence[str],
                    pairs: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Each group of a later folder against its counterpart in the first folder (the baseline), seed by
    seed; and, for every group that could not be paired, why.

    Counterpart: the baseline folder's group with the same arch, ws and aux whose config (seeds aside)
    differs from the group's in the fewest keys, a key set in one and not the other counting as a
    difference; where two tie, none (picking one would be a choice, not a pairing). One Holm family
    over these comparisons, with the rules of `paired_effects`: every comparison with at least two
    seed pairs counts, one without variance as p = 1.
    """
    baseline, *later = folders
    groups = list(runs.groupby(["sweep", "group_id"], sort=False)) if not runs.empty else []
    bases = [g for (folder, _), g in groups if folder == baseline]
    rows, notes = [], []
    if not bases:
        notes.append(f"the baseline folder {baseline} has no finished run: nothing to pair with")
    for folder in later:
        mine = [g for (f, _), g in groups if f == folder]
        if not mine:
            notes.append(f"{folder}: no finished run")
        for group in mine if bases else []:
            first = group.iloc[0]
            name = f"{folder}: {first['context']}, {cell_name(first['ws'], first['aux'])}"
            base, why = _counterpart(first, bases, pairs)
            if base is None:
                notes.append(f"{name}: {why}")
                continue
            changes = _changes(_settings(base.iloc[0]), _settings(first))
            if why:  # paired across architectures by the smallest difference: say so where the pairing shows
                changes[0] += f" ({why})"
            a, b = base.set_index("pair")["test_acc"], group.set_index("pair")["test_acc"]
            common = a.index.intersection(b.index)
            if len(common) < 2:
                how = f"differs in {'; '.join(changes)}" if changes else \
                    "the same settings as the baseline: its runs were pooled with the baseline's group"
                notes.append(f"{name}: {len(common)} seed(s) in common with its baseline counterpart "
                             f"(fewer than 2): no paired test ({how})")
                continue
            diff = (b[common] - a[common]).to_numpy(float)
            bad = int(_flags(base)[common].sum() + _flags(group)[common].sum())
            rows.append({"arch": first["arch"], "ws": first["ws"], "aux": first["aux"], "variant": folder,
                         "settings": "; ".join(changes) or "(none)", **_paired_test(diff), "_not_learned": bad})
    return _holm(pd.DataFrame(rows)), notes
