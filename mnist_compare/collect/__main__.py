"""python -m mnist_compare.collect [SWEEP_DIR ...] [--out DIR] [--pair VARIANT=BASE]: tables, paired
effects, interactions, the report's conclusions as tested verdicts and figures of one sweep, or of
several collected together (a baseline and a variant run separately).

python -m mnist_compare.collect robustness LABEL=DIR[+DIR...] ... --out DIR: each of the report's
conclusions tested on several collections (e.g. seeds 0-9, seeds 10-19, both pooled), side by side."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mnist_compare.collect import claims, curves, hparams
from mnist_compare.collect.figures import bars_figure, curves_figure
from mnist_compare.collect.interactions import interactions
from mnist_compare.collect.report import write_tables
from mnist_compare.collect.runs import load_sweeps, newest_sweep
from mnist_compare.collect.stats import paired_effects, summarise_groups, variant_effects
from mnist_compare.errors import UserError


def parse_pairs(specs: Sequence[str]) -> dict[str, str]:
    """`--pair deep_drop=deep` (repeatable, or comma-separated): a variant architecture -> its baseline's."""
    pairs = {}
    for spec in (s for text in specs for s in text.split(",") if s):
        variant, sep, base = spec.partition("=")
        if not sep or not variant or not base:
            raise UserError(f"--pair {spec}: write VARIANT_ARCH=BASELINE_ARCH, e.g. --pair deep_drop=deep")
        pairs[variant.strip()] = base.strip()
    return pairs


def _check_pairs(pairs: dict[str, str], runs, roots: list[Path]) -> None:
    first = set(runs.loc[runs["sweep"] == str(roots[0]), "arch"])
    later = set(runs.loc[runs["sweep"] != str(roots[0]), "arch"])
    for variant, base in pairs.items():
        if variant not in later:
            raise UserError(f"--pair {variant}={base}: no later folder has a run with arch={variant} "
                            f"(they have: {', '.join(sorted(later)) or 'none'})")
        if base not in first:
            raise UserError(f"--pair {variant}={base}: the baseline folder {roots[0]} has no run with arch={base} "
                            f"(it has: {', '.join(sorted(first))})")


def collect(roots: Path | Sequence[Path], out: Path | None = None, pairs: dict[str, str] | None = None) -> str:
    """Collect `roots` into `out` (by default the one sweep folder itself); return results.md."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    if out is None:
        if len(roots) != 1:
            raise UserError(f"{len(roots)} sweep folders: say where the tables go with --out DIR")
        out = roots[0]
    if pairs and len(roots) < 2:
        raise UserError("--pair pairs a later folder's architecture with the first folder's: give two folders or more")
    sweep = load_sweeps(roots)
    if sweep.runs.empty:
        raise UserError(f"{', '.join(map(str, roots))} holds no finished run "
                        f"({len(sweep.problems)} failed, missing, incomplete or duplicate): see the jobs' failure.json")
    if pairs:
        _check_pairs(pairs, sweep.runs, roots)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise_groups(sweep.runs, sweep.labels)
    effects, notes = paired_effects(sweep.runs, sweep.labels)
    folders = [str(r) for r in roots]
    variants = variant_effects(sweep.runs, folders, pairs) if len(roots) > 1 else None
    table, why_not = claims.write(out, sweep)
    concluded = _conclusions_line(table, why_not)
    md = write_tables(out, sweep, summary, effects, notes, variants, interactions(sweep.runs, folders, pairs),
                      concluded)
    hparams.write(out, sweep)
    curves_figure(out / "curves.png", sweep.runs)
    bars_figure(out / "table1.png", summary, sweep.runs)
    curves.write(out, sweep.runs, sweep.labels, f"Effect curves of {', '.join(folders)}")
    return md


def _conclusions_line(table, why_not: list[str]) -> str:
    if table.empty:
        return f"None: {'; '.join(why_not)}. See [conclusions.md](conclusions.md)."
    verdicts = table.drop_duplicates(["block", "claim"])["claim_verdict"].value_counts()
    said = ", ".join(f"{verdicts.get(v, 0)} {v}" for v in (claims.HOLDS, claims.NOT_SHOWN, claims.CONTRADICTED))
    return (f"Of the report's {len(claims.CLAIMS)} claims, tested seed-paired: {said}. "
            "In [conclusions.md](conclusions.md).")


def robustness(specs: Sequence[str], out: Path) -> str:
    """robustness.md/.csv in `out`: each claim's verdict on each `LABEL=DIR[+DIR...]` collection."""
    collections, sources = [], {}
    for spec in specs:
        label, sep, dirs = spec.partition("=")
        if not sep or not label or not dirs:
            raise UserError(f"{spec}: write LABEL=DIR or LABEL=DIR+DIR (folders pooled), "
                            "e.g. 'seeds 0-9=docs/results/table1'")
        roots = [Path(d) for d in dirs.split("+")]
        sweep = load_sweeps(roots)
        if sweep.runs.empty:
            raise UserError(f"{label}: {dirs} holds no finished run")
        collections.append((label, sweep))
        sources[label] = " + ".join(f"[{r}]({_relative(r, out)}/conclusions.md)" if (r / "conclusions.md").exists()
                                    else str(r) for r in roots)
    try:
        long = claims.robustness(collections)
    except ValueError as e:
        raise UserError(f"no conclusions for {e}") from None
    out.mkdir(parents=True, exist_ok=True)
    long[["collection", "block", "claim", "says", "comparison", "expect", "n_seeds", "estimate", "ci95_low",
          "ci95_high", "p_holm", "verdict", "claim_verdict", "not_learned"]].to_csv(out / "robustness.csv", index=False)
    md = claims.robustness_markdown(long, sources)
    (out / "robustness.md").write_text(md)
    return md


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["robustness"]:
        return _robustness_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m mnist_compare.collect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dirs", nargs="*", type=Path, help="default: the newest sweep under multirun/")
    parser.add_argument("--out", type=Path, help="where to write (needed with several folders; default: the folder)")
    parser.add_argument("--pair", action="append", default=[], metavar="VARIANT=BASE",
                        help="pair a later folder's architecture with the baseline folder's (e.g. deep_drop=deep); "
                             "by default an architecture the baseline lacks pairs by the smallest config difference")
    args = parser.parse_args(argv)
    try:
        roots = args.sweep_dirs or [newest_sweep()]
        out = args.out or (roots[0] if len(roots) == 1 else None)
        print(collect(roots, out, parse_pairs(args.pair)))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"written to {out}: results.md/.csv/.tex, paired_effects.csv, interactions.csv, conclusions.md/.csv, "
          "runs.csv, curves.png, table1.png, tensorboard/ (tensorboard --logdir it: the HPARAMS view)"
          " (variant_effects.csv with several folders; vs_report.md/.csv where the report's protocol was run;"
          " curves.md/.csv and a curve_*.png per architecture where a number, data.n_pairs or aux, was swept over"
          " three values or more)")
    return 0


def _robustness_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnist_compare.collect robustness",
                                     description="Each of the report's conclusions on several collections.")
    parser.add_argument("collections", nargs="+", metavar="LABEL=DIR[+DIR...]",
                        help="a label and its sweep folder(s); folders joined by + are pooled")
    parser.add_argument("--out", type=Path, required=True, help="where robustness.md/.csv go")
    args = parser.parse_args(argv)
    try:
        print(robustness(args.collections, args.out))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"written to {args.out}: robustness.md, robustness.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
