"""docs/study.md quotes the collector's generated files; a quote that drifts from them is a hand-edited number."""

from __future__ import annotations

import pytest
from conftest import ROOT

RESULTS = ROOT / "docs" / "results"


def _section(text: str, start: str, end: str | None) -> list[str]:
    part = text[text.index(start):]
    if end is not None:
        part = part[:part.index(end)]
    return [line for line in part.splitlines() if line.strip()]


def test_study_quotes_the_robustness_table_and_summary_as_generated():
    study = (ROOT / "docs" / "study.md").read_text()
    robustness = (RESULTS / "robustness.md").read_text()
    table = [line for line in robustness.splitlines() if line.startswith("|")]
    table = table[:table.index(next(line for line in table if line.startswith("| The deep MLP"))) + 1]
    summary = _section(robustness, "- **Claims that hold in every collection**", "## Each comparison")
    assert len(table) == 13 and len(summary) > 5
    for line in table + summary:
        assert line in study, f"docs/study.md does not quote this line of robustness.md as generated:\n{line}"


def test_the_published_aux_curve_is_the_paired_effects_numbers():
    """The aux-weight curve comes from the generic curve code; its figures are the paired effects' own."""
    import numpy as np
    import pandas as pd

    curves = pd.read_csv(RESULTS / "aux_curve" / "curves.csv")
    effects = pd.read_csv(RESULTS / "aux_curve" / "paired_effects.csv")
    effects["value"] = [float(e.split()[-1]) for e in effects["effect"]]
    merged = curves.merge(effects, left_on=["line", "value"], right_on=["arch", "value"], suffixes=("", "_e"))
    assert len(merged) == len(curves) == len(effects) == 30
    for key in ("mean_diff", "ci95_low", "ci95_high", "p_ttest", "p_wilcoxon", "p_holm"):
        assert np.array_equal(merged[key], merged[f"{key}_e"], equal_nan=True), key


def test_the_published_curves_page_is_what_the_collector_writes_now():
    """curves.md of the published aux-weight sweep, regenerated from its runs (no figures drawn)."""
    import os

    from mnist_compare.collect import curves
    from mnist_compare.collect.runs import load_sweep

    folder = os.path.relpath(RESULTS / "aux_curve", ROOT)  # as the collector was called: from the repo root
    sweep = load_sweep(RESULTS / "aux_curve")
    written = curves.markdown(curves.curves(sweep.runs, sweep.labels), f"Effect curves of {folder}")
    assert written == (RESULTS / "aux_curve" / "curves.md").read_text()


def test_study_quotes_the_training_size_curves_as_generated():
    study = (ROOT / "docs" / "study.md").read_text()
    page = (RESULTS / "n_pairs" / "curves.md").read_text()
    findings = _section(page, "### What the curves show", "### The report's claims at each value")[1:]
    grid = [line for line in _section(page, "### The report's claims at each value", "### Every comparison")
            if line.startswith("|")]
    lead = [line for line in _section(page, "### The claims' comparisons at each value", None)
            if line.startswith(("| conv_best", "| not_additive"))]
    assert len(findings) == 12 + 11 and len(grid) == 13 and len(lead) == 11
    for line in findings + grid + lead:
        assert line in study, f"docs/study.md does not quote this line of n_pairs/curves.md as generated:\n{line}"


def test_the_training_size_study_at_1000_pairs_is_table_1():
    """Its 1000-pair runs are the published Table-1 runs (same run_ids, same numbers): so are their conclusions."""
    import pandas as pd

    sizes = pd.read_csv(RESULTS / "n_pairs" / "conclusions.csv")
    at_1000 = sizes[sizes["block"] == "data.n_pairs=1000"].drop(columns="block").reset_index(drop=True)
    table1 = pd.read_csv(RESULTS / "table1" / "conclusions.csv").drop(columns="block")
    pd.testing.assert_frame_equal(at_1000, table1)
    runs = pd.read_csv(RESULTS / "n_pairs" / "runs.csv")
    published = pd.read_csv(RESULTS / "table1" / "runs.csv").set_index("run_id")["test_acc"]
    mine = runs[runs["data.n_pairs"] == 1000].set_index("run_id")["test_acc"]
    assert len(mine) == 120 and mine.sort_index().equals(published.sort_index())


@pytest.mark.slow  # collects the 600 published runs: 10 s
def test_the_published_training_size_curves_are_what_the_collector_writes_now():
    import os

    from mnist_compare.collect import curves
    from mnist_compare.collect.runs import load_sweep

    folder = os.path.relpath(RESULTS / "n_pairs", ROOT)
    sweep = load_sweep(RESULTS / "n_pairs")
    written = curves.markdown(curves.curves(sweep.runs, sweep.labels), f"Effect curves of {folder}")
    assert written == (RESULTS / "n_pairs" / "curves.md").read_text()
