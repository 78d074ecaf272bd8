"""Our groups that ran the report's protocol against the report's Table 1 (report_2019.csv)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from mnist_compare.collect.fmt import DASH, pm
from mnist_compare.collect.runs import LAST_EPOCH, UNSET, cell_name, show

REFERENCE = Path(__file__).with_name("report_2019.csv")
# The report's training protocol (docs/reference/original-study.md) as flattened config keys; a group
# compares with the report only when its config has every one of them, with this value.
PROTOCOL: dict[str, Any] = {
    "trainer.max_epochs": 50,
    "data.n_pairs": 1000,
    "data.batch_size": 100,
    "data.shuffle": False,
    "data.normalize": False,
    "data.val_pairs": 0,
    "data.augment": None,
    "model.optimizer._target_": "torch.optim.Adam",
    "model.optimizer.lr": 0.001,
    "model.scheduler": None,
    "model.label_smoothing": 0.0,
}


def reference() -> pd.DataFrame:
    table = pd.read_csv(REFERENCE, comment="#")
    table["ws"] = table["ws"].astype(str).str.lower() == "true"
    return table


def _differences(flat: dict[str, Any], n_params: Any, selection: str, ref_params: int) -> list[str]:
    """How a group's settings depart from the report's protocol (empty: it is the protocol)."""
    out = [f"{k}={show(flat[k]) if k in flat else UNSET} (report: {show(v)})"
           for k, v in PROTOCOL.items() if k not in flat or show(flat[k]) != show(v)]
    if selection != LAST_EPOCH:
        out.append(f"selection={selection} (report: a test-pair epoch)")
    if n_params != ref_params:
        out.append(f"n_params={n_params} (report's architecture: {ref_params})")
    return out


def _signed(z: float) -> str:
    return DASH if not math.isfinite(z) else f"{z:+.1f}".replace("-0.0", "+0.0")


def compare(summary: pd.DataFrame, runs: pd.DataFrame, labels: list[str]) -> tuple[pd.DataFrame, str]:
    """(one row per group that ran the protocol, why there is none otherwise).

    diff/SE: our last-epoch mean minus the report's, over the standard error of a difference of two
    independent means, sqrt(s_report²/n_report + s_ours²/n_ours): about 2 in either direction is
    the noise band of a faithful re-run (the report's means and stds: docs/reference/original-study.md,
    Table 1).
    """
    ref = reference().set_index(["arch", "ws", "aux"])
    extra = [c for c in labels if c not in ("arch", "ws", "aux")]
    rows, departures = [], []
    for g in summary.itertuples(index=False):
        key = (g.arch, bool(g.ws), float(g.aux))
        if key not in ref.index:
            continue
        r = ref.loc[key]
        first = runs[runs["group"] == g.group].iloc[0]
        differ = _differences(first["flat"], g.n_params, first["selection"], int(r["n_params"]))
        if differ:
            departures.append(f"{g.context} {cell_name(g.ws, g.aux)}: {', '.join(differ)}")
            continue
        se = math.sqrt(r["std"] ** 2 / r["n"] + g.test_acc_std**2 / g.n) if g.n > 1 else math.nan
        diff = g.test_acc_mean - r["mean"]
        rows.append({
            "arch": g.arch, "cell": cell_name(g.ws, g.aux),
            **({"settings": g.context} if extra else {}),
            "report_mean": r["mean"], "report_std": r["std"], "report_n": int(r["n"]),
            "n": g.n, "last_epoch_mean": g.test_acc_mean, "last_epoch_std": g.test_acc_std,
            "best_epoch_on_test_mean": g.best_epoch_on_test_mean, "best_epoch_on_test_std": g.best_epoch_on_test_std,
            "diff": diff, "diff_over_se": diff / se if se > 0 else math.nan,
        })
    if rows:
        return pd.DataFrame(rows), ""
    if not departures:
        return pd.DataFrame(), "no group has one of the report's cells (arch shallow, deep or conv, aux 0 or 0.5)"
    more = f" (and {len(departures) - 3} more)" if len(departures) > 3 else ""
    return pd.DataFrame(), "no group runs the report's protocol: " + "; ".join(departures[:3]) + more


def markdown(table: pd.DataFrame) -> str:
    """vs_report.md: the report's Table 1 beside ours."""
    view = pd.DataFrame({
        "arch": table["arch"], "cell": table["cell"],
        **({"settings": table["settings"]} if "settings" in table else {}),
        "report (n = 10)": [pm(m, s) for m, s in zip(table["report_mean"], table["report_std"], strict=True)],
        "n": table["n"],
        "ours, last epoch": [pm(m, s) for m, s in zip(table["last_epoch_mean"], table["last_epoch_std"],
                                                        strict=True)],
        "ours, best epoch on test (report's method, optimistic)": [
            pm(m, s) for m, s in zip(table["best_epoch_on_test_mean"], table["best_epoch_on_test_std"], strict=True)
        ],
        "diff (last - report)": [f"{d:+.4f}" for d in table["diff"]],
        "diff / SE": [_signed(z) for z in table["diff_over_se"]],
    })
    return "\n".join([
        "# Our reproduction of the report's Table 1",
        "",
        "Report: EE-559 mini-project report 2019, Table 1 (mean ± sample std over 10 runs). Ours: mean ± "
        "sample std over seeds of the last-epoch test accuracy, the figure this project delivers; beside it the "
        "best epoch chosen on the test pairs, the report's method, which is optimistic and shown only to compare. "
        "diff / SE: the difference over the standard error of a difference of two means, "
        "sqrt(s_report²/n_report + s_ours²/n_ours); within about ±2 is the noise band of a faithful re-run.",
        "",
        view.to_markdown(index=False, disable_numparse=True),
        "",
    ])
