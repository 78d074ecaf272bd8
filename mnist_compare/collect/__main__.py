"""python -m mnist_compare.collect [SWEEP_DIR ...] [--out DIR]: tables, paired effects and figures of
one sweep, or of several collected together (a baseline and a variant run separately)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mnist_compare.collect.figures import aux_curve_figure, bars_figure, curves_figure
from mnist_compare.collect.report import write_tables
from mnist_compare.collect.runs import load_sweeps, newest_sweep
from mnist_compare.collect.stats import paired_effects, summarise_groups, variant_effects
from mnist_compare.errors import UserError


def collect(roots: Path | Sequence[Path], out: Path | None = None) -> str:
    """Collect `roots` into `out` (by default the one sweep folder itself); return results.md."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    if out is None:
        if len(roots) != 1:
            raise UserError(f"{len(roots)} sweep folders: say where the tables go with --out DIR")
        out = roots[0]
    sweep = load_sweeps(roots)
    if sweep.runs.empty:
        raise UserError(f"{', '.join(map(str, roots))} holds no finished run "
                        f"({len(sweep.problems)} failed, missing, incomplete or duplicate): see the jobs' failure.json")
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise_groups(sweep.runs, sweep.labels)
    effects, notes = paired_effects(sweep.runs, sweep.labels)
    variants = variant_effects(sweep.runs, [str(r) for r in roots]) if len(roots) > 1 else None
    md = write_tables(out, sweep, summary, effects, notes, variants)
    curves_figure(out / "curves.png", sweep.runs)
    bars_figure(out / "table1.png", summary, sweep.runs)
    aux_curve_figure(out / "aux_curve.png", summary, sweep.runs)
    return md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_compare.collect", description=__doc__)
    parser.add_argument("sweep_dirs", nargs="*", type=Path, help="default: the newest sweep under multirun/")
    parser.add_argument("--out", type=Path, help="where to write (needed with several folders; default: the folder)")
    args = parser.parse_args(argv)
    try:
        roots = args.sweep_dirs or [newest_sweep()]
        out = args.out or (roots[0] if len(roots) == 1 else None)
        print(collect(roots, out))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"written to {out}: results.md/.csv/.tex, paired_effects.csv, runs.csv, curves.png, table1.png"
          " (variant_effects.csv with several folders; vs_report.md/.csv where the report's protocol was run;"
          " aux_curve.png for three or more aux weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
