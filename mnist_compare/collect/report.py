"""Tables of a collection (Markdown, CSV, LaTeX): every missing figure shows as a dash, never as nan."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from mnist_compare.collect import interactions, vs_report
from mnist_compare.collect.fmt import DASH, num, pm
from mnist_compare.collect.runs import UNSET, Sweep, cell_name, show
from mnist_compare.collect.stats import MIN_SEEDS, wilcoxon_text


def summary_view(summary: pd.DataFrame, labels: list[str], one_kind: bool) -> pd.DataFrame:
    """The group table as a reader sees it: command-line spellings, dashes for what does not exist."""
    view = pd.DataFrame({k: [show(v) for v in summary[k]] for k in labels})
    view["n"] = summary["n"]
    if not one_kind:
        view["delivered"] = summary["delivered"]
    view["test acc"] = [num(v) for v in summary["test_acc_mean"]]
    view["std"] = [num(v) for v in summary["test_acc_std"]]
    view["95% interval"] = [DASH if not math.isfinite(lo) else f"[{lo:.4f}, {hi:.4f}]"
                            for lo, hi in zip(summary["ci95_low"], summary["ci95_high"], strict=True)]
    if summary["best_epoch_on_test_mean"].notna().any():
        view["best epoch on test (report's method, optimistic)"] = [
            pm(m, s) for m, s in zip(summary["best_epoch_on_test_mean"], summary["best_epoch_on_test_std"],
                                      strict=True)]
    if summary["val_acc_mean"].notna().any():
        view["val acc"] = [num(v) for v in summary["val_acc_mean"]]
    # without the auxiliary loss nothing trains the pipes' 10-way outputs: their digit accuracy is noise
    view["digit acc"] = [num(v) if aux else DASH for v, aux in zip(summary["test_aux_acc_mean"], summary["aux"],
                                                                     strict=True)]
    view["params"] = [num(v, ".0f") for v in summary["n_params"]]
    view["s / run"] = [num(v, ".1f") for v in summary["train_time_s_mean"]]
    if summary["sweep"].nunique() > 1:
        view["sweep"] = summary["sweep"]
    view["note"] = summary["note"]
    return view


def table1(summary: pd.DataFrame) -> pd.DataFrame:
    """Contexts (the architecture, with `key=value` of any other swept setting) as rows, WS/aux cells
    as columns: mean ± std; n beside it where groups differ in n."""
    cells = sorted({(bool(w), float(a)) for w, a in zip(summary["ws"], summary["aux"], strict=True)},
                   key=lambda c: (c[1], c[0]))
    same_n = summary["n"].nunique() == 1
    out: dict[str, dict[str, str]] = {}
    for r in summary.itertuples(index=False):
        text = pm(r.test_acc_mean, r.test_acc_std) + ("" if same_n else f" (n = {r.n})")
        out.setdefault(r.context, {})[cell_name(r.ws, r.aux)] = text
    view = pd.DataFrame.from_dict(out, orient="index").reindex(columns=[cell_name(*c) for c in cells])
    kinds = summary.groupby("context", sort=False)["delivered"].agg(lambda s: "; ".join(sorted(set(s))))
    if summary["delivered"].nunique() > 1:
        view["delivered"] = kinds
    return view.fillna(DASH)


def effects_view(effects: pd.DataFrame) -> pd.DataFrame:
    view = effects.drop(columns=["mean_diff", "ci95_low", "ci95_high", "p_ttest", "p_wilcoxon", "p_holm"]).copy()
    for k in view.columns:
        if k in ("ws", "aux") or view[k].dtype == bool:
            view[k] = [show(v) for v in view[k]]
    view.insert(view.columns.get_loc("n_pairs") + 1, "mean diff", [f"{d:+.4f}" for d in effects["mean_diff"]])
    view.insert(view.columns.get_loc("mean diff") + 1, "95% CI",
                [DASH if not math.isfinite(lo) else f"[{lo:+.4f}, {hi:+.4f}]"
                 for lo, hi in zip(effects["ci95_low"], effects["ci95_high"], strict=True)])
    for k in ("p_ttest", "p_wilcoxon", "p_holm"):
        view.insert(view.columns.get_loc("verdict"), k, [num(p, ".3g") for p in effects[k]])
    view["p_wilcoxon"] = [wilcoxon_text(p, n) for p, n in zip(effects["p_wilcoxon"], effects["n_pairs"], strict=True)]
    return view


def numeric_labels(table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """A copy for CSV: a label column whose set values are all numbers holds numbers, and nothing
    (an empty cell) where a run left the key unset, never the word `(unset)` among numbers."""
    table = table.copy()
    for k in labels:
        if k in ("arch", "ws", "aux") or k not in table:
            continue
        values = [v for v in table[k] if v != UNSET]
        if values and all(_number(v) for v in values):
            table[k] = [float(v) if v != UNSET else math.nan for v in table[k]]
    return table


def _number(text: object) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return str(text).lower() not in ("nan", "inf", "-inf", "true", "false")


def code_versions(runs: pd.DataFrame) -> str:
    """One line naming the code each run came from (version, commit, dirty, source hash, torch), with
    counts: runs of different code averaged together must never go unsaid."""
    def name(code: Any, versions: Any) -> str:
        torch = f", torch {versions.get('torch', '?')}" if isinstance(versions, dict) else ""
        if not isinstance(code, dict):
            return "no code record" + torch
        commit = str(code.get("commit") or "?")[:10] + (" (dirty)" if code.get("dirty") else "")
        source = str(code.get("source_hash") or "?")[:10]
        mine = code.get("user_modules")
        user = "".join(f", {k} {str(v)[:10]}" for k, v in sorted(mine.items())) if isinstance(mine, dict) else ""
        return f"{code.get('version', '?')} commit {commit} source {source}{user}{torch}"

    none = [None] * len(runs)
    counts = Counter(name(c, v) for c, v in zip(runs.get("code", none), runs.get("versions", none), strict=True))
    listed = "; ".join(f"{k}: {v} run{'s' * (v > 1)}" for k, v in counts.most_common())
    if len(counts) == 1:
        return f"Code: {listed}."
    return f"**The runs come from {len(counts)} code versions**: {listed}."


MACHINE = (("cpu", "CPU models"), ("cpu_capability", "ATen kernel sets"))


def mixed_machines(runs: pd.DataFrame) -> str | None:
    """A line naming the groups whose seeds ran on different CPU models or ATen kernel sets
    (AVX2, AVX512, ...): their numbers may differ by more than the seeds (docs/reproducibility.md)."""
    found = []
    for key, what in MACHINE:
        if key not in runs.columns:
            continue
        recorded = runs[key].map(lambda v: "not recorded" if v is None or (isinstance(v, float) and math.isnan(v))
                                 else str(v))
        for _, group in runs.assign(_m=recorded).groupby("group", sort=True):
            if group["_m"].nunique() > 1:
                first = group.iloc[0]
                counts = "; ".join(f"{k}: {v}" for k, v in group["_m"].value_counts().sort_index().items())
                found.append(f"{first['context']}, {cell_name(first['ws'], first['aux'])}: {group['_m'].nunique()} "
                             f"{what} ({counts})")
    if not found:
        return None
    return f"**Groups mixing machines** (their spread may include the machines'): {'. '.join(found)}."


def variant_section(sweep: Sweep, variants: pd.DataFrame, notes: list[str]) -> list[str]:
    """results.md's lines on each later folder's groups against the first folder's."""
    text = ["## Variant effects: each later folder against the first (same seed = same pairs)", "",
            f"Baseline: {sweep.roots[0]}. Each group of a later folder is paired by seed with the baseline "
            "folder's group of the same arch, ws and aux whose config differs from it in the fewest settings "
            "(`key: baseline -> variant`; none where two tie). Mean difference (variant - baseline) of test "
            "accuracy, its 95% CI (Student-t), paired t-test and Wilcoxon p-values, and the t-test p-value "
            "Holm-adjusted over these comparisons (statsmodels). Differences without variance have no test and "
            "count as not significant.", ""]
    if variants.empty:
        text.append("Nothing to pair:")
    else:
        text.append(effects_view(variants).to_markdown(index=False, disable_numparse=True))
        text += ["", "Not paired:"] if notes else []
    return [*text, *([""] if notes else []), *(f"- {n}" for n in notes)]


def write_tables(out: Path, sweep: Sweep, summary: pd.DataFrame, effects: pd.DataFrame, notes: list[str],
                 variants: tuple[pd.DataFrame, list[str]] | None = None,
                 interacting: tuple[pd.DataFrame, list[str]] | None = None, concluded: str = "") -> str:
    """Write results.md/.csv/.tex, paired_effects.csv, runs.csv, with several folders
    variant_effects.csv and, where the report's protocol was run, vs_report.md/.csv; return the
    Markdown of results.md."""
    runs, labels = sweep.runs, sweep.labels
    numeric_labels(summary.drop(columns=["group"]), labels).to_csv(out / "results.csv", index=False)
    numeric_labels(effects, labels).to_csv(out / "paired_effects.csv", index=False)
    if variants is not None:
        variants[0].to_csv(out / "variant_effects.csv", index=False)
    keep = ["sweep", "run_id", *labels, "seed", "pair", "delivered", "selection", "delivered_epoch", "test_acc",
            "best_test_acc", "best_epoch", "val_acc", "test_aux_acc", "test_rule_acc", "train_acc", "n_params",
            "epochs", "train_time_s", "learned_nothing", "learned_nothing_why", "job"]
    numeric_labels(runs[[c for c in keep if c in runs]], labels).to_csv(out / "runs.csv", index=False)
    kinds = sorted(set(summary["delivered"]))
    one_kind = len(kinds) == 1
    what = kinds[0] if one_kind else "test accuracy of the delivered model, which differs by group: see `delivered`"
    view = table1(summary)
    (out / "results.tex").write_text(
        summary.drop(columns=["group"]).style.format(precision=4, na_rep=DASH).hide(axis="index").to_latex(
            hrules=True)
        + "\n" + view.style.to_latex(hrules=True)
    )
    compared, why_not = vs_report.compare(summary, runs, labels)
    if not compared.empty:
        compared.to_csv(out / "vs_report.csv", index=False)
        (out / "vs_report.md").write_text(vs_report.markdown(compared))
    folders = ", ".join(str(r) for r in sweep.roots)
    text = [
        f"# Results of {folders}",
        "",
        f"{what[0].upper() + what[1:]} over seeds: mean, sample std (ddof = 1), 95% interval (Student-t on the "
        f"logit scale, so it stays within 0 and 1; none below {MIN_SEEDS} seeds or without variance, see `note`).",
        "",
        code_versions(runs),
        "",
        *([mixed, ""] if (mixed := mixed_machines(runs)) else []),
        summary_view(summary, labels, one_kind).to_markdown(index=False, disable_numparse=True),
        "",
        f"## Table-1 view: {what}; mean ± std over seeds",
        "",
        view.to_markdown(disable_numparse=True),
        "",
        "## Paired effects against the baseline cell (same seed = same pairs)",
        "",
        "Mean difference of test accuracy, its 95% CI (Student-t), paired t-test and Wilcoxon p-values, and "
        "the t-test p-value Holm-adjusted over all comparisons (statsmodels). The report compared unpaired means "
        "with no test or interval. Differences without variance have no test and count as not significant.",
        "",
        (effects_view(effects).to_markdown(index=False, disable_numparse=True) if not effects.empty
         else "No paired comparison:"),
    ]
    if notes:
        text += ["", "Comparisons not made:"] if not effects.empty else []
        text += ["", *(f"- {n}" for n in notes)]
    text += ["", *variant_section(sweep, *variants)] if variants is not None else []
    if interacting is not None:
        interacting[0].to_csv(out / "interactions.csv", index=False)
        text += ["", *interactions.section(*interacting)]
    text += ["", "## The report's conclusions", "", concluded] if concluded else []
    text += ["", "## Comparison with the report", "",
             "In [vs_report.md](vs_report.md)." if not compared.empty else f"None: {why_not}."]
    if not sweep.problems.empty:
        left = sweep.problems if len(sweep.roots) > 1 else sweep.problems.drop(columns="sweep")
        text += ["", f"## Runs left out ({len(left)})", "", left.to_markdown(index=False, disable_numparse=True)]
        if (left["status"] == "duplicate").any():
            text += ["", "A run found more than once (equal run_id, or equal config, seed included) counts once: "
                     "the first in the order of the folders given, then of job paths; the others are listed "
                     "here. A `duplicate.json` marks a launch that found its run finished elsewhere."]
    md = "\n".join(text) + "\n"
    (out / "results.md").write_text(md)
    return md
