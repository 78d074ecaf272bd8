"""python -m mnist_compare.collect [SWEEP_DIR]: tables, paired effects and figures of a sweep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mnist_compare.collect.report import aux_curve_figure, bars_figure, curves_figure, table1, write_tables
from mnist_compare.collect.runs import load_sweep, newest_sweep
from mnist_compare.collect.stats import paired_effects, summarise_groups
from mnist_compare.errors import UserError


def collect(root: Path) -> str:
    sweep = load_sweep(root)
    if sweep.runs.empty:
        raise UserError(f"{root} holds no finished run ({len(sweep.problems)} failed, missing or incomplete)")
    summary = summarise_groups(sweep.runs, sweep.labels)
    effects = paired_effects(sweep.runs, sweep.labels)
    md = write_tables(root, summary, effects, table1(summary, sweep.labels), sweep.problems, sweep.runs, sweep.labels)
    curves_figure(root / "curves.png", sweep.runs, sweep.labels)
    bars_figure(root / "table1.png", summary, sweep.labels)
    aux_curve_figure(root / "aux_curve.png", summary, sweep.labels)
    return md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_compare.collect", description=__doc__)
    parser.add_argument("sweep_dir", nargs="?", type=Path, help="default: the newest sweep under multirun/")
    args = parser.parse_args(argv)
    try:
        root = args.sweep_dir or newest_sweep()
        print(collect(root))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"written to {root}: results.md/.csv/.tex, paired_effects.csv, runs.csv, curves.png, table1.png"
          " (and aux_curve.png for a sweep over three or more aux weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
