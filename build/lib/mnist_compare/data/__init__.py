"""Data: MNIST files, pooled 14x14 digits, digit pairs and the Lightning data module."""

from mnist_compare.data.datamodule import PairDataModule
from mnist_compare.data.pairs import generate_pair_sets

__all__ = ["PairDataModule", "generate_pair_sets"]
