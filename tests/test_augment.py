"""Pair augmentation: swaps recompute the target from the classes; shapes and values stay sane."""

from __future__ import annotations

import torch

from mnist_compare.data.augment import PairAugment


def test_swap_recomputes_target_and_moves_images_with_their_classes():
    x = torch.arange(4 * 2 * 14 * 14, dtype=torch.float32).reshape(4, 2, 14, 14)
    classes = torch.tensor([[1, 5], [7, 2], [3, 4], [9, 0]])
    target = (classes[:, 0] <= classes[:, 1]).long()
    aug = PairAugment(max_shift=0, max_degrees=0, swap=True)
    out_x, out_t, out_c = aug((x, target, classes), torch.Generator().manual_seed(0))
    assert torch.equal(out_t, (out_c[:, 0] <= out_c[:, 1]).long())
    for i in range(4):
        swapped = not torch.equal(out_c[i], classes[i])
        if swapped:
            assert torch.equal(out_x[i, 0], x[i, 1]) and torch.equal(out_c[i], classes[i].flip(0))
        else:
            assert torch.equal(out_x[i], x[i])


def test_affine_jitter_is_reproducible_and_keeps_the_digit():
    x = torch.zeros(8, 2, 14, 14)
    x[:, :, 4:10, 6:8] = 255.0
    batch = (x, torch.zeros(8, dtype=torch.long), torch.zeros(8, 2, dtype=torch.long))
    aug = PairAugment(max_shift=1.5, max_degrees=12, swap=False)
    a = aug(batch, torch.Generator().manual_seed(1))[0]
    b = aug(batch, torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    ink = a.sum((2, 3)) / x.sum((2, 3))
    assert ((ink > 0.8) & (ink < 1.2)).all()  # moved and turned a little, not lost
