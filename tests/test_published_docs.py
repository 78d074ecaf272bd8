"""docs/study.md quotes the collector's generated files; a quote that drifts from them is a hand-edited number."""

from __future__ import annotations

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
