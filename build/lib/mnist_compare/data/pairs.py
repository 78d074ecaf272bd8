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


def check_n_pairs(n_pairs: int) -> None:
    limit = min(MAX_PAIRS.values())
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or not 1 <= n_pairs <= limit:
        raise UserError(
            f"data.n_pairs={n_pairs!r} is not allowed: use an integer from 1 to {limit} "
            f"(the MNIST test set has 10,000 images, two per pair), e.g. data.n_pairs=1000"
        )


def generate_pair_sets(
    n_pairs: int, seed: int, data_dir: str | Path | None = None
) -> tuple[torch.Tensor, ...]:
    """Train input, target, classes, then test input, target, classes, in the prologue's order.

    A private generator seeded with `seed` draws the train then the test permutation, so the
    same seed gives the same tensors in any process and the global RNG state is left alone.
    """
    check_n_pairs(n_pairs)
    pooled = load_pooled(str(data_dir) if data_dir is not None else None)
    generator = torch.Generator().manual_seed(int(seed))
    train = _to_pairs(n_pairs, pooled["train_input"], pooled["train_target"], generator)
    test = _to_pairs(n_pairs, pooled["test_input"], pooled["test_target"], generator)
    return train + test
