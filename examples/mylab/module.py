"""A training variant of your own: a LightningModule subclass with a knob of its own."""

from __future__ import annotations

from typing import Any

from mnist_compare.models import CompareModule


class WarmupAux(CompareModule):
    """Starts with the auxiliary digit loss alone (w = 1) and moves linearly to the configured
    w over `warmup_epochs`: digits first, comparison later."""

    def __init__(self, *args: Any, warmup_epochs: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target_weight = self.aux_loss_weight
        self.warmup_epochs = warmup_epochs

    def on_train_epoch_start(self) -> None:
        done = min(1.0, self.current_epoch / self.warmup_epochs) if self.warmup_epochs else 1.0
        self.aux_loss_weight = 1.0 + (self.target_weight - 1.0) * done
