"""Pair augmentation: swaps recompute the target from the classes; borders stay background."""

from __future__ import annotations

import torch

from mnist_compare.data import PairDataModule
from mnist_compare.data.augment import PairAugment


def test_swap_recomputes_target_and_moves_images_with_their_classes():
    x = torch.arange(64 * 2 * 14 * 14, dtype=torch.float32).reshape(64, 2, 14, 14)
    classes = torch.randint(0, 10, (64, 2), generator=torch.Generator().manual_seed(3))
    classes[:, 1] = (classes[:, 0] + 1 + classes[:, 1] % 9) % 10  # two different digits per pair
    target = (classes[:, 0] <= classes[:, 1]).long()
    aug = PairAugment(max_shift=0, max_degrees=0, swap=True)
    out_x, out_t, out_c = aug((x, target, classes), torch.Generator().manual_seed(0))
    assert torch.equal(out_t, (out_c[:, 0] <= out_c[:, 1]).long())
    swapped = (out_c != classes).any(1)
    assert 10 < swapped.sum() < 54  # about half the pairs swapped (an augmenter that never swaps fails)
    assert torch.equal(out_x[swapped], x[swapped].flip(1)) and torch.equal(out_c[swapped], classes[swapped].flip(1))
    assert torch.equal(out_x[~swapped], x[~swapped]) and torch.equal(out_c[~swapped], classes[~swapped])
    assert (out_t[swapped] != target[swapped]).all()  # distinct digits: a swap flips the answer


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


def test_augmented_training_batches_are_normalised_after_augmentation(mnist_dir):
    """Shifted and rotated borders must be the normalised background, never a frame of zeros."""
    dm = PairDataModule(n_pairs=200, seed=0, batch_size=200, normalize=True, val_pairs=50,
                        augment=PairAugment(max_shift=1.5, max_degrees=12, swap=True))
    dm.setup()
    mean, std = dm.stats
    background = -mean / std
    (x, _, _), = list(dm.train_dataloader())
    assert x.min().item() >= background - 1e-4  # nothing darker than the background
    border = torch.cat((x[..., 0, :].flatten(), x[..., -1, :].flatten(), x[..., :, 0].flatten(),
                        x[..., :, -1].flatten()))
    assert (border - background).abs().lt(1e-4).float().mean() > 0.9  # the frame is background
    assert not (border.abs() < 1e-6).any()  # and no zero (= mean grey) pixel where the image was empty
    (val_x, _, _), = list(dm.val_dataloader()[0])
    assert val_x.min().item() >= background - 1e-4
