"""Digit pairs exactly as the course prologue (`dlc_practical_prologue.generate_pair_sets`) drew them."""

from __future__ import annotations

from pathlib import Path

import torch

from mnist_compare.data.mnist import load_pooled
from mnist_compare.errors import UserError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input (N, 2, 14, 14), target (N,), classes (N, 2)
MAX_PAIRS = {"train": 30_000, "test": 5_000}  # 60,000 and 10,000 images, two per pair


def _to_pairs(
    n_pairs: int, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> Batch:
    """Permute, take the first 2N images, pair them; target 1 iff first digit <= second."""
    index = torch.randperm(images.size(0), generator=generator)[: 2 * n_pairs].view(n_pairs, 2)
    classes = labels[index].long()
    target = (classes[:, 0] <= classes[:, 1]).long()
    return images[index].contiguous(), target, classes


def check_n_pairs(n_pairs: int, test_pairs: int | None = None) -> None:
    """The train set may hold up to 30,000 pairs, the test set up to 5,000 (the MNIST test set's
    10,000 images); with `test_pairs` null the test set has `n_pairs` pairs, as in the protocol."""
    sizes = {"n_pairs": (n_pairs, MAX_PAIRS["train"] if test_pairs is not None else MAX_PAIRS["test"])}
    if test_pairs is not None:
        sizes["test_pairs"] = (test_pairs, MAX_PAIRS["test"])
    for key, (value, limit) in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            why = ("the MNIST test set has 10,000 images, two per pair" if limit == MAX_PAIRS["test"]
                   else "the MNIST training set has 60,000 images, two per pair")
            more = ("; data.test_pairs=1000 fixes the test set and allows up to 30000 training pairs"
                    if key == "n_pairs" and test_pairs is None and isinstance(value, int) and value > limit else "")
            raise UserError(f"data.{key}={value!r} is not allowed: use an integer from 1 to {limit} ({why}), "
                            f"e.g. data.{key}=1000{more}")


def generate_pair_sets(
    n_pairs: int, seed: int, data_dir: str | Path | None = None, test_pairs: int | None = None
) -> tuple[torch.Tensor, ...]:
    """Train input, target, classes, then test input, target, classes, in the prologue's order.

    A private generator seeded with `seed` draws the train then the test permutation, so the
    same seed gives the same tensors in any process and the global RNG state is left alone.
    Each permutation covers its whole MNIST set whatever the sizes, so for one seed the training
    pairs at a smaller `n_pairs` are the first pairs of those at a larger one, and the test
    pairs depend only on `test_pairs` (null: `n_pairs`, the protocol).
    """
    check_n_pairs(n_pairs, test_pairs)
    pooled = load_pooled(str(data_dir) if data_dir is not None else None)
    generator = torch.Generator().manual_seed(int(seed))
    train = _to_pairs(n_pairs, pooled["train_input"], pooled["train_target"], generator)
    n_test = n_pairs if test_pairs is None else test_pairs
    test = _to_pairs(n_test, pooled["test_input"], pooled["test_target"], generator)
    return train + test
