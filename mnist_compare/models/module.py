"""The one LightningModule of the project: every architecture and technique is a config of it."""

from __future__ import annotations

import math
from collections import defaultdict
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_compare.errors import UserError
from mnist_compare.models.nets import PairNet

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def check_aux_weight(w: object) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 1:
        raise UserError(f"aux={w!r} is not allowed: use a number from 0 to 1, e.g. aux=0.5")
    return float(w)


def mixed_loss(
    outputs: Outputs, target: torch.Tensor, classes: torch.Tensor, w: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """(1 - w) * CE(main) + w * mean(CE(aux first), CE(aux second)); a zero-weight term is skipped."""
    logits, aux_first, aux_second = outputs
    loss = torch.zeros((), device=logits.device)
    if w < 1:
        loss = loss + (1 - w) * F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    if w > 0:
        aux = F.cross_entropy(aux_first, classes[:, 0], label_smoothing=label_smoothing)
        aux = aux + F.cross_entropy(aux_second, classes[:, 1], label_smoothing=label_smoothing)
        loss = loss + w * aux / 2
    return loss


def counts(outputs: Outputs, target: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Correct comparisons, correct digits (of 2n), and correct comparisons by the fixed
    `digit <= digit` rule on the predicted digits (reference only, never the model's answer)."""
    logits, aux_first, aux_second = outputs
    d1, d2 = aux_first.argmax(1), aux_second.argmax(1)
    return torch.stack((
        (logits.argmax(1) == target).sum(),
        (d1 == classes[:, 0]).sum() + (d2 == classes[:, 1]).sum(),
        ((d1 <= d2).long() == target).sum(),
    ))


def train_sums(loss: torch.Tensor, outputs: Outputs, target: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """A training batch's loss x size, counts and size, kept as a tensor (no sync per step)."""
    with torch.no_grad():
        n = torch.tensor(float(target.numel()), device=loss.device)
        return torch.cat(((loss * n).view(1), counts(outputs, target, classes), n.view(1)))


def train_figures(sums: list[torch.Tensor]) -> dict[str, float]:
    """An epoch's training figures from its batches' `train_sums`."""
    loss, correct, digits, _, n = torch.stack(sums).sum(0).tolist()
    return {"loss": loss / n, "acc": correct / n, "aux_acc": digits / (2 * n)}


def add_eval_batch(sums: list[float], outputs: Outputs, target: torch.Tensor, classes: torch.Tensor) -> None:
    """Add an evaluated batch's summed loss, counts and size to `sums` ([0.0, 0, 0, 0, 0] at first)."""
    main = F.cross_entropy(outputs[0], target, reduction="sum")
    correct, digits, rule = counts(outputs, target, classes).tolist()
    for i, value in enumerate((main.item(), correct, digits, rule, target.numel())):
        sums[i] += value


def eval_figures(sums: list[float]) -> dict[str, float]:
    loss, correct, digits, rule, n = sums
    return {"loss": loss / n, "acc": correct / n, "aux_acc": digits / (2 * n), "rule_acc": rule / n}


# pragma: no mutate block (scripts/mutation: Lightning's save_hyperparameters reads __init__'s own frame,
# which mutmut's trampoline would hide; the numbers are made by the functions above)
class CompareModule(pl.LightningModule):
    """Pipe/classifier configs, weight sharing and the auxiliary weight w in [0, 1].

    Metrics are summed in tensors and logged once per epoch (`stage/metric`, TensorBoard's
    step = epoch): logging every step costs more than a shallow-net step. `history` keeps the per-epoch figures for
    `metrics.json`.
    """

    def __init__(
        self,
        pipe: DictConfig,
        classifier: DictConfig,
        weight_sharing: bool = True,
        aux_loss_weight: float = 0.0,
        optimizer: DictConfig | None = None,
        scheduler: DictConfig | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.aux_loss_weight = check_aux_weight(aux_loss_weight)
        # plain containers, so that checkpoints load with torch.load(weights_only=True)
        pipe, classifier, optimizer, scheduler = (
            OmegaConf.to_container(c, resolve=True) if isinstance(c, DictConfig) else c
            for c in (pipe, classifier, optimizer, scheduler)
        )
        self.save_hyperparameters()
        self.net = PairNet(partial(instantiate, pipe), instantiate(classifier), bool(weight_sharing))
        self.label_smoothing = label_smoothing
        self.history: dict[str, list[float]] = defaultdict(list)
        self.final: dict[str, dict[str, float]] = {}  # the delivered model scored once, after training
        self._train_sums: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> Outputs:
        return self.net(x)

    def configure_optimizers(self) -> Any:
        make = instantiate(self.hparams.optimizer) if self.hparams.optimizer else partial(torch.optim.Adam, lr=1e-3)
        optimizer = make(self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": instantiate(self.hparams.scheduler)(optimizer)}

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, target, classes = batch
        outputs = self.net(x)
        loss = mixed_loss(outputs, target, classes, self.aux_loss_weight, self.label_smoothing)
        self._train_sums.append(train_sums(loss, outputs, target, classes))
        return loss

    def on_train_epoch_end(self) -> None:
        figures = train_figures(self._train_sums)
        self._train_sums.clear()
        if not math.isfinite(figures["loss"]):
            raise FloatingPointError(f"non-finite training loss ({figures['loss']}) in epoch {self.current_epoch + 1}")
        self._record("train", figures)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(self.trainer.datamodule.eval_stages[dataloader_idx], batch)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> None:
        # `trainer.test` scores the delivered model once, after training (runs with validation pairs)
        self._evaluate(self.trainer.datamodule.final_stages[dataloader_idx], batch)

    def _evaluate(self, stage: str, batch: tuple[torch.Tensor, ...]) -> None:
        x, target, classes = batch
        add_eval_batch(self._eval_sums.setdefault(stage, [0.0, 0, 0, 0, 0]), self.net(x), target, classes)

    def on_validation_epoch_start(self) -> None:
        self._eval_sums: dict[str, list[float]] = {}

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        for stage, sums in self._eval_sums.items():
            self._record(stage, eval_figures(sums))

    def on_test_epoch_end(self) -> None:
        for stage, sums in self._eval_sums.items():
            self.final[stage] = eval_figures(sums)

    def _record(self, stage: str, values: dict[str, float]) -> None:
        """Keep the epoch's figures in `history` and send them straight to the logger, per epoch
        (step = epoch counted from 1, as in metrics.json and the figures).

        `self.log` builds a metric object per key and epoch (about 1 ms each, a third of a
        shallow-net epoch); only the `val/*` figures that callbacks monitor go through it.
        """
        if self.trainer.sanity_checking:
            return
        for k, v in values.items():
            self.history[f"{stage}/{k}"].append(v)
        if self.logger is not None:
            self.logger.log_metrics({f"{stage}/{k}": v for k, v in values.items()}, step=self.current_epoch + 1)
        if stage == "val":  # for checkpoint/early-stopping callbacks; the logger has them already
            self.log_dict({"val/acc": values["acc"], "val/loss": values["loss"]}, logger=False)
