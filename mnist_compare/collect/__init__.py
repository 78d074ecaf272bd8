"""Collector: sweep folders of per-job metrics.json files -> tables, paired effects, figures."""

from mnist_compare.collect.runs import load_sweep, load_sweeps
from mnist_compare.collect.stats import paired_effects, summarise_groups, variant_effects

__all__ = ["load_sweep", "load_sweeps", "paired_effects", "summarise_groups", "variant_effects"]
