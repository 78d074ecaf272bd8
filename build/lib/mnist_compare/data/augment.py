"""Training-pair augmentation for the beyond-the-report model (never used by the protocol runs)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mnist_compare.data.pairs import Batch


class PairAugment:
    """Random swaps of the two digits (target recomputed from the classes, so the rule is never
    given to the model), then an independent small rotation and shift of every digit."""

    def __init__(self, max_shift: float = 1.0, max_degrees: float = 10.0, swap: bool = True) -> None:
        self.max_shift, self.max_degrees, self.swap = max_shift, max_degrees, swap

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> Batch:
        x, target, classes = batch
        if self.swap:
            flip = torch.rand(x.size(0), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(1), x)
            classes = torch.where(flip[:, None], classes.flip(1), classes)
            target = (classes[:, 0] <= classes[:, 1]).long()
        if self.max_shift or self.max_degrees:
            x = self._affine(x, generator)
        return x, target, classes

    def _affine(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, pairs, h, w = x.shape
        images = x.reshape(n * pairs, 1, h, w)
        angle = (torch.rand(n * pairs, generator=generator) * 2 - 1) * math.radians(self.max_degrees)
        shift = (torch.rand(n * pairs, 2, generator=generator) * 2 - 1) * self.max_shift * 2 / h  # pixels -> [-1, 1]
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack((torch.stack((cos, -sin, shift[:, 0]), 1), torch.stack((sin, cos, shift[:, 1]), 1)), 1)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros").reshape(n, pairs, h, w)
