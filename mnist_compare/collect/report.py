"""Tables (Markdown, CSV, LaTeX) and figures (PNG) of a collected sweep."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def cell_name(ws: bool, aux: float) -> str:
    return f"WS {'on' if ws else 'off'}, aux {f'{aux:g}' if aux else 'off'}"


def _cells(frame: pd.DataFrame) -> list[tuple[bool, float]]:
    """The report's column order: aux off before on, WS off before on."""
    cells = {(bool(w), float(a)) for w, a in zip(frame["ws"], frame["aux"], strict=True)}
    return sorted(cells, key=lambda c: (c[1], c[0]))


def table1(summary: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Architectures (and any other context) as rows, WS/aux combinations as columns: mean ± std."""
    rows = [c for c in labels if c not in ("ws", "aux")]
    out = {}
    for ctx, group in summary.groupby(rows, sort=True, observed=True):
        name = " ".join(map(str, ctx)) if isinstance(ctx, tuple) else str(ctx)
        out[name] = {
            cell_name(r.ws, r.aux): f"{r.test_acc_mean:.4f} ± {r.test_acc_std:.4f}" for r in group.itertuples()
        }
    order = [cell_name(*c) for c in _cells(summary)]
    return pd.DataFrame.from_dict(out, orient="index").reindex(columns=order)


def markdown(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt)


def write_tables(root: Path, summary: pd.DataFrame, effects: pd.DataFrame, view: pd.DataFrame,
                 problems: pd.DataFrame, runs: pd.DataFrame, labels: list[str]) -> str:
    """Write results.md/.csv/.tex, paired_effects.csv and runs.csv; return the Markdown."""
    summary.to_csv(root / "results.csv", index=False)
    effects.to_csv(root / "paired_effects.csv", index=False)
    keep = [*labels, "seed", "test_acc", "selection", "best_test_acc", "best_epoch", "test_aux_acc", "test_rule_acc",
            "val_acc", "train_acc", "n_params", "epochs", "train_time_s", "job"]
    runs[[c for c in keep if c in runs]].sort_values([*labels, "seed"]).to_csv(root / "runs.csv", index=False)
    (root / "results.tex").write_text(
        summary.style.format(precision=4).hide(axis="index").to_latex(hrules=True)
        + "\n" + view.style.to_latex(hrules=True)
    )
    chosen = "selection" in runs and (runs["selection"] != "last epoch").any()
    what = ("Test accuracy of the checkpoint chosen on validation pairs (`selection` in runs.csv)" if chosen
            else "Final-epoch test accuracy")
    text = [
        f"# Results of {root}",
        "",
        f"{what} over seeds: mean, sample std (ddof = 1), Student-t 95% CI. "
        "`best_epoch_on_test` is the report's figure (best epoch chosen on the test pairs): "
        "optimistic, shown only to compare with the report.",
        "",
        markdown(summary),
        "",
        f"## Table-1 view ({what[0].lower() + what[1:]}, mean ± std)",
        "",
        view.to_markdown(),
        "",
        "## Paired effects against the baseline cell (same seed = same pairs)",
        "",
        "Mean difference of test accuracy, its 95% CI, paired t-test and Wilcoxon p-values, and the "
        "t-test p-value Holm-adjusted over all comparisons. The report compared unpaired means with "
        "no test or interval; an effect 'holds' here only when its Holm-adjusted p < 0.05.",
        "",
        markdown(effects, ".4g") if not effects.empty else "(no baseline cell to pair with)",
    ]
    if not problems.empty:
        text += ["", f"## Runs left out ({len(problems)})", "", problems.to_markdown(index=False)]
    md = "\n".join(text) + "\n"
    (root / "results.md").write_text(md)
    return md


def _panels(runs: pd.DataFrame, labels: list[str]) -> list[tuple[str, pd.DataFrame]]:
    rows = [c for c in labels if c not in ("ws", "aux")]
    groups = runs.groupby(rows, sort=True, observed=True)
    return [(" ".join(map(str, k)) if isinstance(k, tuple) else str(k), g) for k, g in groups]


def curves_figure(path: Path, runs: pd.DataFrame, labels: list[str]) -> None:
    """Per panel: mean ± std over seeds of test accuracy and training loss, per epoch."""
    panels = _panels(runs, labels)
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 6.5), squeeze=False, sharex="col")
    for col, (name, group) in enumerate(panels):
        for ws, aux in _cells(group):
            cell = group[(group["ws"] == ws) & (group["aux"] == aux)]
            for row, key in enumerate(("test_acc", "train_loss")):
                series = [h[key] for h in cell["history"] if key in h]
                length = min(map(len, series))
                curves = np.array([s[:length] for s in series])
                if key == "train_loss":  # spans decades: geometric mean, band of one std of the log
                    curves = np.log(np.maximum(curves, 1e-12))
                mean, std = curves.mean(0), curves.std(0, ddof=1) if len(curves) > 1 else 0 * curves[0]
                low, high = mean - std, mean + std
                if key == "train_loss":
                    mean, low, high = np.exp(mean), np.exp(low), np.exp(high)
                epochs = np.arange(1, length + 1)
                ax = axes[row, col]
                (line,) = ax.plot(epochs, mean, label=cell_name(ws, aux))
                ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2)
        axes[0, col].set_title(name)
        axes[0, col].set_ylabel("test accuracy")
        axes[1, col].set_ylabel("training loss (optimised mix, geometric mean)")
        axes[1, col].set_xlabel("epoch")
        axes[1, col].set_yscale("log")
    axes[0, 0].legend(fontsize=8)
    n = runs.groupby(labels, observed=True).size().min()
    fig.suptitle(f"Learning curves, mean ± std over seeds (n = {n} per line)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bars_figure(path: Path, summary: pd.DataFrame, labels: list[str]) -> None:
    """Grouped bars of final-epoch test accuracy with std error bars, one group per panel."""
    panels = _panels(summary, labels)
    cells = _cells(summary)
    width = 0.8 / len(cells)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(panels), 4.2))
    for i, (ws, aux) in enumerate(cells):
        means, stds = [], []
        for _, group in panels:
            hit = group[(group["ws"] == ws) & (group["aux"] == aux)]
            means.append(hit["test_acc_mean"].iloc[0] if len(hit) else np.nan)
            stds.append(hit["test_acc_std"].iloc[0] if len(hit) else np.nan)
        ax.bar(np.arange(len(panels)) + (i - (len(cells) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=cell_name(ws, aux))
    ax.set_xticks(np.arange(len(panels)), [name for name, _ in panels])
    low = np.nanmin(summary["test_acc_mean"] - summary["test_acc_std"].fillna(0))
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_ylabel("final-epoch test accuracy (mean ± std)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def aux_curve_figure(path: Path, summary: pd.DataFrame, labels: list[str]) -> bool:
    """Test accuracy against the auxiliary weight, one line per architecture/WS, when the sweep has
    at least three weights; returns whether it drew one."""
    if summary["aux"].nunique() < 3:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    lines = [c for c in labels if c != "aux"]
    for key, group in summary.groupby(lines, sort=True, observed=True):
        group = group.sort_values("aux")
        parts = dict(zip(lines, key if isinstance(key, tuple) else (key,), strict=True))
        name = " ".join(f"WS {'on' if v else 'off'}" if k == "ws" else str(v) for k, v in parts.items())
        (line,) = ax.plot(group["aux"], group["test_acc_mean"], marker="o", ms=3, label=name)
        ax.fill_between(group["aux"], group["test_acc_mean"] - group["test_acc_std"],
                        group["test_acc_mean"] + group["test_acc_std"], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("auxiliary loss weight w  (loss = (1 - w) main + w aux)")
    ax.set_ylabel("final-epoch test accuracy (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
