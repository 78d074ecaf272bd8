"""Pipes (one 14x14 digit -> 10 digit logits), classifiers (20 -> 2) and the pair network."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int], dropout: float = 0.0, batch_norm: bool = False) -> nn.Sequential:
    """Flatten, then Linear layers with ReLU after every hidden one (the study's MLPs)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(n_out)] if batch_norm else []
            layers.append(nn.ReLU(inplace=True))  # nothing needs the pre-activation: saves a buffer per layer
            layers += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers)


def conv_pipe(
    channels: Sequence[int] = (16, 32, 64, 64),
    padding: Sequence[int] = (1, 0, 1, 0),
    pool: Sequence[int] = (1, 2, 1, 4),
    hidden: int = 100,
    n_out: int = 10,
    batch_norm: bool = False,
    dropout: float = 0.0,
    channels_last: bool = True,
) -> nn.Sequential:
    """3x3 convs, each with ReLU and optionally max-pooling of size `pool[i]` (1: none), then a
    one-hidden-layer MLP; the defaults are the study's ConvNet pipe.

    Where a conv is pooled, the pooling runs before its ReLU: ReLU is monotone, so the two
    commute exactly, outputs and gradients to the last bit (tested), and the ReLU and its
    backward then touch a quarter (pool 2) or a sixteenth (pool 4) of the values.

    `channels_last` stores the conv weights (and so the activations) as NHWC, which oneDNN's
    CPU convolutions run about 20% faster here; the numbers change only in the last bits
    (summation order), which is why it is a config setting and part of a run's identity."""
    layers: list[nn.Module] = []
    n_in = 1
    for n_out_c, pad, size in zip(channels, padding, pool, strict=True):
        layers.append(nn.Conv2d(n_in, n_out_c, kernel_size=3, padding=pad))
        layers += [nn.BatchNorm2d(n_out_c)] if batch_norm else []
        layers += [nn.MaxPool2d(size)] if size > 1 else []  # before the ReLU: the same numbers, less work
        layers.append(nn.ReLU(inplace=True))  # nothing needs the pre-activation: saves a buffer per layer
        n_in = n_out_c
    features = nn.Sequential(*layers)
    with torch.no_grad():
        n_flat = features(torch.zeros(1, 1, 14, 14)).numel()
    pipe = nn.Sequential(*layers, mlp([n_flat, hidden, n_out], dropout=dropout, batch_norm=batch_norm))
    return pipe.to(memory_format=torch.channels_last) if channels_last else pipe


class DigitProbabilities(nn.Module):
    """Softmax over each digit's 10 outputs of the concatenated pair (20 values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(-1, 2, 10).softmax(-1).flatten(1)


def prob_classifier(sizes: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """An MLP on the two digits' probabilities instead of their raw logits, whose scale varies:
    the comparison stays learned, only its input is normalised."""
    return nn.Sequential(DigitProbabilities(), mlp(sizes, dropout=dropout))


class PairNet(nn.Module):
    """Two digits through the pipe(s), the two 10-way outputs concatenated into the classifier.

    Weight sharing: one pipe sees both images (in one batched call); without it, each image
    has its own independently initialised pipe.
    """

    def __init__(
        self, make_pipe: Callable[[], nn.Module], classifier: nn.Module, weight_sharing: bool
    ) -> None:
        super().__init__()
        self.weight_sharing = weight_sharing
        self.pipes = nn.ModuleList([make_pipe() for _ in range(1 if weight_sharing else 2)])
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first, second = x[:, 0:1], x[:, 1:2]
        if self.weight_sharing:
            aux_first, aux_second = self.pipes[0](torch.cat((first, second))).chunk(2)
        else:
            aux_first, aux_second = self.pipes[0](first), self.pipes[1](second)
        return self.classifier(torch.cat((aux_first, aux_second), dim=1)), aux_first, aux_second
