"""A network of your own: any callable returning an nn.Module that maps (N, 1, 14, 14) to (N, 10)."""

from __future__ import annotations

from torch import nn


def lenet_pipe(channels: tuple[int, int] = (6, 16), hidden: int = 84) -> nn.Sequential:
    """A LeNet-like pipe: two 3x3 convs with 2x2 average pooling, then a hidden layer."""
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),   # 14 -> 7
        nn.Conv2d(c1, c2, 3), nn.Tanh(), nn.AvgPool2d(2),             # 7 -> 5 -> 2
        nn.Flatten(), nn.Linear(c2 * 2 * 2, hidden), nn.Tanh(), nn.Linear(hidden, 10),
    )
