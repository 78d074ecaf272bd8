"""Figures of a collection (PNG): each says how many seeds it averages and what model was delivered."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from mnist_compare.collect.runs import DELIVERED, LAST_EPOCH, cell_name

CHANCE = 0.5  # two classes, about balanced


def _cells(frame: pd.DataFrame) -> list[tuple[bool, float]]:
    """The report's column order: aux off before on, WS off before on."""
    return sorted({(bool(w), float(a)) for w, a in zip(frame["ws"], frame["aux"], strict=True)},
                  key=lambda c: (c[1], c[0]))


def _seeds(counts: pd.Series, per: str = "line") -> str:
    low, high = int(counts.min()), int(counts.max())
    return f"n = {low if low == high else f'{low} to {high}'} seeds per {per}"


def _wrap(text: str, inches: float) -> str:
    """Break a title to the figure's width (about 11 characters an inch at this font size)."""
    return textwrap.fill(text, max(30, int(inches * 11)))


def _panel_title(name: str) -> str:
    return name.replace(" ", "\n") if len(name) > 28 else name


def _delivered(selections: pd.Series, marks: tuple[str, str] = (" (solid)", " (dashed)")) -> str:
    """What model each run delivered, for a title; `marks` tell the two apart where both occur."""
    chosen = set(selections) - {LAST_EPOCH}
    if not chosen:
        return "delivered: the last-epoch model"
    if len(chosen) == len(set(selections)):
        return "delivered: the checkpoint chosen on validation pairs"
    return f"delivered: the last-epoch model{marks[0]} or the checkpoint chosen on validation pairs{marks[1]}"


def _chosen(delivered: pd.Series) -> bool:
    """Whether any group delivered a checkpoint chosen on validation pairs rather than the last epoch."""
    return bool((delivered != DELIVERED[True]).any())


def _band(curves: list[list[float]], log: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and mean ± std (ddof=1) per epoch, up to the shortest run (no survivor bias); `log`: of
    the logarithm (a loss spanning decades: geometric mean, a band that stays positive)."""
    length = min(map(len, curves))
    values = np.array([c[:length] for c in curves], float)
    values = np.log(np.maximum(values, 1e-12)) if log else values
    mean = values.mean(0)
    std = values.std(0, ddof=1) if len(values) > 1 else np.zeros(length)
    bands = (mean, mean - std, mean + std)
    return tuple(np.exp(b) for b in bands) if log else bands


def curves_figure(path: Path, runs: pd.DataFrame) -> None:
    """Per context (a column): held-out accuracy, held-out comparison cross-entropy, and the optimised
    training loss, each on its own axis (the training loss mixes in the digit loss with weight w, so
    it is not the comparison's cross-entropy). Runs delivered by a checkpoint chosen on validation
    pairs have no test curve: their validation curves are drawn, dashed and labelled as such."""
    panels = list(runs.groupby("context", sort=False))
    width = 4.4 * len(panels) + 0.6
    fig, axes = plt.subplots(3, len(panels), figsize=(width, 10), squeeze=False, sharey="row")
    stages_seen, truncated = set(), False
    for col, (name, group) in enumerate(panels):
        for ws, aux in _cells(group):
            cell = group[(group["ws"] == ws) & (group["aux"] == aux)]
            histories = [h for h in cell.get("history", []) if isinstance(h, dict)]
            validation = (cell["selection"] != LAST_EPOCH).any() or not all("test_acc" in h for h in histories)
            stage = "val" if validation else "test"
            stages_seen.add(stage)
            label = cell_name(ws, aux) + (" (validation pairs)" if validation else "")
            color = None
            for row, key in enumerate((f"{stage}_acc", f"{stage}_loss", "train_loss")):
                curves = [h[key] for h in histories if h.get(key)]
                if not curves:
                    continue
                mean, low, high = _band(curves, log=key == "train_loss")
                truncated |= len({len(c) for c in curves}) > 1
                epochs = np.arange(1, len(mean) + 1)
                ax = axes[row, col]
                (line,) = ax.plot(epochs, mean, color=color, ls="--" if validation else "-",
                                  label=label if row == 0 else None)
                color = line.get_color()
                ax.fill_between(epochs, low, high, color=color, alpha=0.15)
        axes[0, col].set_title(_panel_title(name), fontsize=9)
        axes[2, col].set_xlabel("epoch")
        axes[2, col].set_yscale("log")
        for ax in axes[:, col]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
            ax.grid(alpha=0.3)
        if col == 0 or _cells(group) != _cells(panels[0][1]) or (group["selection"] != LAST_EPOCH).any():
            axes[0, col].legend(fontsize=7)
    where = {frozenset({"test"}): "test pairs", frozenset({"val"}): "validation pairs"}.get(
        frozenset(stages_seen), "test (solid) or\nvalidation pairs (dashed)")
    axes[0, 0].set_ylabel(f"accuracy on {where}")
    axes[1, 0].set_ylabel(f"comparison cross-entropy\non {where}")
    axes[2, 0].set_ylabel("optimised training loss, geometric mean\n(1 - w) comparison CE + w digit CE")
    counts = runs.groupby("group").size()
    title = f"Learning curves, mean ± std over seeds ({_seeds(counts)}); {_delivered(runs['selection'])}"
    title += "; runs stopped early: each line ends with its shortest run" if truncated else ""
    fig.suptitle(_wrap(title, width))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bars_figure(path: Path, summary: pd.DataFrame, runs: pd.DataFrame) -> None:
    """Table 1 as grouped bars: mean test accuracy, error bars one sample std. The axis starts at 0.5
    (chance) so that the bars' differences show, or lower where a bar and its error bar reach below
    chance (an auxiliary weight of 1 collapses to about 0.49), so that no bar disappears; chance is
    a labelled line."""
    panels = list(summary.groupby("context", sort=False))
    cells = _cells(summary)
    width = 0.8 / len(cells)
    inches = 3.0 + 1.7 * len(panels)
    fig, ax = plt.subplots(figsize=(inches, 4.8))
    floor = axis_floor(summary)
    for i, (ws, aux) in enumerate(cells):
        means, stds = [], []
        for _, group in panels:
            hit = group[(group["ws"] == ws) & (group["aux"] == aux)]
            means.append(float(hit["test_acc_mean"].iloc[0]) if len(hit) else np.nan)
            stds.append(float(hit["test_acc_std"].iloc[0]) if len(hit) else np.nan)
        x = np.arange(len(panels)) + (i - (len(cells) - 1) / 2) * width
        means, stds = np.array(means), np.array(stds)
        ax.bar(x, means - floor, width, bottom=floor, label=cell_name(ws, aux))
        has = np.isfinite(stds)  # n = 1: no std, no error bar
        ax.errorbar(x[has], means[has], yerr=stds[has], fmt="none", ecolor="black", capsize=3, lw=1)
    chosen = "\n(checkpoint chosen\non validation)"
    names = [name.replace(" ", "\n") + (chosen if _chosen(group["delivered"]) else "") for name, group in panels]
    ax.set_xticks(np.arange(len(panels)), names, fontsize=8)
    ax.axhline(CHANCE, color="dimgray", ls="--", lw=1, zorder=0.5, label=f"chance ({CHANCE:g})")
    ax.set_ylim(floor, 1.0)
    start = "= chance" if floor == CHANCE else "(under chance) so that every bar shows"
    ax.set_ylabel(f"test accuracy, mean ± 1 std over seeds\n(axis from {floor:.2f} {start})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    delivered = _delivered(runs["selection"], ("", " (labelled below)"))
    ax.set_title(_wrap(f"Test accuracy per cell; {delivered}; {_seeds(summary['n'], 'bar')}", inches * 0.8),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def axis_floor(summary: pd.DataFrame) -> float:
    """Where the bars' axis starts: chance, or 0.05 under the lowest mean - std when that is lower."""
    means = summary["test_acc_mean"].to_numpy(float)
    lows = means - np.nan_to_num(summary["test_acc_std"].to_numpy(float))  # n = 1: no std
    return float(min(CHANCE, np.nanmin(lows) - 0.05)) if len(lows) else CHANCE
