"""The LightningDataModule: fresh pairs per seed, served as slices of in-memory tensors."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch

from mnist_compare.data.pairs import Batch, check_n_pairs, generate_pair_sets
from mnist_compare.errors import UserError


class TensorBatches:
    """Mini-batches as tensor slices: no per-sample indexing or collation (a DataLoader costs
    more than the shallow net's whole step)."""

    def __init__(
        self,
        tensors: Batch,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        transform: Callable[[Batch, torch.Generator], Batch] | None = None,
    ) -> None:
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.transform = transform

    def __len__(self) -> int:
        return math.ceil(self.tensors[0].size(0) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        tensors = self.tensors
        if self.shuffle:
            order = torch.randperm(tensors[0].size(0), generator=self.generator)
            tensors = tuple(t[order] for t in tensors)  # type: ignore[assignment]
        for start in range(0, tensors[0].size(0), self.batch_size):
            batch = tuple(t[start : start + self.batch_size] for t in tensors)
            yield self.transform(batch, self.generator) if self.transform else batch  # type: ignore[misc]


def _positive_int(name: str, value: object, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name}={value!r} is not allowed: use an integer >= 1, e.g. {example}")
    return value


class PairDataModule(pl.LightningDataModule):
    """Draws the seed's `n_pairs` train and `test_pairs` (null: as many) test pairs; optionally holds out `val_pairs`
    training pairs for validation, so that nothing needs to be chosen on the test pairs."""

    def __init__(
        self,
        n_pairs: int = 1000,
        seed: int = 0,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        shuffle: bool = False,
        normalize: bool = False,
        val_pairs: int = 0,
        data_dir: str | Path | None = None,
        augment: Callable[[Batch, torch.Generator], Batch] | None = None,
        test_pairs: int | None = None,
    ) -> None:
        super().__init__()
        check_n_pairs(n_pairs, test_pairs)
        _positive_int("data.batch_size", batch_size, "data.batch_size=100")
        _positive_int("data.eval_batch_size", eval_batch_size, "data.eval_batch_size=1000")
        if isinstance(val_pairs, bool) or not isinstance(val_pairs, int) or not 0 <= val_pairs < n_pairs:
            raise UserError(
                f"data.val_pairs={val_pairs!r} is not allowed: use an integer from 0 to "
                f"n_pairs - 1 = {n_pairs - 1}, e.g. data.val_pairs=200"
            )
        self.save_hyperparameters(ignore=["augment", "data_dir"])
        self.n_pairs, self.test_pairs, self.seed, self.val_pairs = n_pairs, test_pairs, seed, val_pairs
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.shuffle, self.normalize, self.augment = shuffle, normalize, augment
        self.data_dir = data_dir
        self.splits: dict[str, Batch] = {}
        self.stats: tuple[float, float] | None = None  # (mean, std) of the fitting pairs' pixels

    @property
    def eval_stages(self) -> list[str]:
        """What is evaluated after every epoch: the validation pairs when there are some (the
        test pairs then stay unseen until the delivered model is scored once), else the test
        pairs, as the report's protocol did."""
        return ["val"] if self.val_pairs else ["test"]

    @property
    def final_stages(self) -> list[str]:
        """What `trainer.test` scores once, on the delivered model, in `test_dataloader` order."""
        return ["val", "test"] if self.val_pairs else ["test"]

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        tr_x, tr_y, tr_c, te_x, te_y, te_c = generate_pair_sets(self.n_pairs, self.seed, self.data_dir,
                                                                  self.test_pairs)
        n_fit = self.n_pairs - self.val_pairs  # the pairs are a random draw: the tail is a random subset
        if self.normalize:  # statistics of the fitting pairs only, never of validation or test pairs
            self.stats = (float(tr_x[:n_fit].mean()), float(tr_x[:n_fit].std()))
        train = (tr_x[:n_fit], tr_y[:n_fit], tr_c[:n_fit])
        # Augmented batches are normalised after the augmentation, so that what rotation and
        # shifts bring in at the borders is the background, not a frame of zeros.
        self.splits = {"train": train if self.augment else self._normalised(train),
                       "test": self._normalised((te_x, te_y, te_c))}
        if self.val_pairs:
            self.splits["val"] = self._normalised((tr_x[n_fit:], tr_y[n_fit:], tr_c[n_fit:]))

    def _normalised(self, batch: Batch) -> Batch:
        if self.stats is None:
            return batch
        mean, std = self.stats
        return ((batch[0] - mean) / std, *batch[1:])  # type: ignore[return-value]

    def _augmented(self, batch: Batch, generator: torch.Generator) -> Batch:
        return self._normalised(self.augment(batch, generator))  # type: ignore[misc]

    def train_dataloader(self) -> TensorBatches:
        # Its own generator (seeded by the seed) keeps shuffling and augmentation reproducible.
        generator = torch.Generator().manual_seed(int(self.seed) + 1)
        transform = self._augmented if self.augment else None
        return TensorBatches(self.splits["train"], self.batch_size, self.shuffle, generator, transform)

    def val_dataloader(self) -> list[TensorBatches]:
        return [TensorBatches(self.splits[s], self.eval_batch_size) for s in self.eval_stages]

    def test_dataloader(self) -> list[TensorBatches]:
        return [TensorBatches(self.splits[s], self.eval_batch_size) for s in self.final_stages]
