"""Collector: a sweep directory of per-job metrics.json files -> tables, paired effects, figures."""

from mnist_compare.collect.runs import load_sweep
from mnist_compare.collect.stats import paired_effects, summarise_groups

__all__ = ["load_sweep", "paired_effects", "summarise_groups"]
