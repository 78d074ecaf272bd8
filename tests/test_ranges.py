"""The edges of every range the pre-launch check enforces: the last value allowed passes, the
first value beyond it is refused with the one-line error. A range off by one at an edge lets a
run train on a setting that means nothing (`lr=0` trains a chance-level model and records it
as finished) or refuses a valid one (`aux=1`, `seed=0`, `checkpoint_after_s=0`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hydra import compose, initialize_config_dir

from mnist_compare.data.datamodule import PairDataModule
from mnist_compare.errors import UserError
from mnist_compare.models.module import check_aux_weight
from mnist_compare.paths import CONF_DIR
from mnist_compare.run.preflight import check_settings


@pytest.fixture(scope="module")
def hydra() -> Iterator[None]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def settings(*overrides: str) -> None:
    """`check_settings` on the config of a run with `overrides`, as the pre-launch check sees it."""
    check_settings(compose("train", list(overrides), return_hydra_config=True))


# (override, the error's start) at each edge: the value just inside passes, the one just outside is refused
EDGES = [
    # lr > 0: the smallest positive value passes, zero and below do not
    ("model.optimizer.lr=1e-12", None),
    ("model.optimizer.lr=0", "model.optimizer.lr=0 is not allowed: use a finite number > 0, e.g. "
                             "model.optimizer.lr=0.001"),
    ("model.optimizer.lr=0.0", "model.optimizer.lr=0.0 is not allowed: use a finite number > 0"),
    ("model.optimizer.lr=-1e-12", "model.optimizer.lr=-1e-12 is not allowed: use a finite number > 0"),
    ("model.optimizer.lr=inf", "model.optimizer.lr=inf is not allowed: use a finite number > 0"),
    ("model.optimizer.lr=true", "model.optimizer.lr=True is not allowed"),
    # seed >= 0
    ("seed=0", None),
    ("seed=-1", "seed=-1 is not allowed: use an integer >= 0"),
    ("seed=true", "seed=True is not allowed"),
    # seeds up to 2**32 - 1, the largest numpy and Lightning take: seed, and data.seed when set apart
    ("seed=4294967295", None),
    ("seed=4294967296", "seed=4294967296 is not allowed: use an integer from 0 to 4294967295 (2**32 - 1, the "
                        "largest seed numpy and Lightning take), e.g. seed=0"),
    ("data.seed=4294967295", None),
    ("data.seed=0", None),
    ("data.seed=4294967296", "data.seed=4294967296 is not allowed: use an integer from 0 to 4294967295 (2**32 - 1, "
                             "the largest seed numpy and Lightning take), e.g. data.seed=0"),
    ("data.seed=-1", "data.seed=-1 is not allowed: use an integer from 0 to 4294967295"),
    # label smoothing in [0, 1); left out of a model config: not checked
    ("model.label_smoothing=0", None),
    ("model.label_smoothing=0.999", None),
    ("~model.label_smoothing", None),
    ("model.label_smoothing=1", "model.label_smoothing=1 is not allowed: use a number from 0 up to (not including) "
                                "1, e.g. model.label_smoothing=0.1"),
    ("model.label_smoothing=1.5", "model.label_smoothing=1.5 is not allowed"),
    ("model.label_smoothing=-0.01", "model.label_smoothing=-0.01 is not allowed"),
    ("model.label_smoothing=true", "model.label_smoothing=True is not allowed"),
    ("model.label_smoothing=small", "model.label_smoothing='small' is not allowed"),
    # the model's copies of ws and aux agree with them (the records and tables name runs by ws and aux)
    ("model.weight_sharing=false", None),
    ("~model.weight_sharing", None),
    ("~model.aux_loss_weight", None),
    ("model.weight_sharing=true", "model.weight_sharing=true disagrees with ws=false: set ws=true instead (records, "
                                  "console and tables name runs by ws)"),
    ("model.weight_sharing=0", "model.weight_sharing=0 disagrees with ws=false: set ws=0 instead"),
    ("model.aux_loss_weight=0.5", "model.aux_loss_weight=0.5 disagrees with aux=0.0: set aux=0.5 instead (records, "
                                  "console and tables name runs by aux)"),
    ("model.aux_loss_weight=abc", "model.aux_loss_weight=abc disagrees with aux=0.0: set aux=abc instead"),
    # threads >= 1 (or null: torch's default)
    ("threads=1", None),
    ("threads=null", None),
    ("threads=0", "threads=0 is not allowed: use an integer >= 1"),
    ("threads=1.5", "threads=1.5 is not allowed"),
    ("threads=true", "threads=True is not allowed"),
    # trainer.max_epochs >= 1
    ("trainer.max_epochs=1", None),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is not allowed: use an integer >= 1"),
    ("trainer.max_epochs=true", "trainer.max_epochs=True is not allowed"),
    # checkpoint_after_s >= 0 (0: every epoch) or null (never)
    ("checkpoint_after_s=0", None),
    ("checkpoint_after_s=null", None),
    ("checkpoint_after_s=-0.001", "checkpoint_after_s=-0.001 is not allowed: use seconds >= 0"),
    ("checkpoint_after_s=false", "checkpoint_after_s=False is not allowed"),
    # ws and fuse_seeds: booleans only
    ("ws=true", None),
    ("ws=1", "ws=1 is not allowed: use ws=true or ws=false"),
    ("fuse_seeds=false", None),
    ("fuse_seeds=0", "fuse_seeds=0 is not allowed"),
    ("~fuse_seeds", None),  # left out: its default
    # only the settings the program reads, and an architecture named by its file
    ("+aux_weight=0.5", "aux_weight is not a setting this program reads: did you mean aux?"),
    ("+arch.name=shallow", None),
    ("+arch.name=deep", "arch=shallow has `name: deep` inside: delete that line"),
    # a callback that monitors a figure: one the module logs, on validation pairs
    ("callbacks=best_on_val", "callbacks monitor val/loss but data.val_pairs=0: hold out validation pairs"),
]


@pytest.mark.parametrize(("override", "error"), EDGES)
def test_each_top_level_range_is_exact_at_its_edges(hydra, override, error):
    if error is None:
        settings(override)
        return
    with pytest.raises(UserError) as refused:
        settings(override)
    assert str(refused.value).startswith(error), str(refused.value)


@pytest.mark.parametrize("w", [0, 0.0, 1, 1.0, 0.5])
def test_aux_weight_from_zero_to_one_inclusive_passes(w):
    assert check_aux_weight(w) == w and isinstance(check_aux_weight(w), float)


@pytest.mark.parametrize("w", [-1e-9, 1 + 1e-9, -1, 2, True, "0.5", None])
def test_aux_weight_outside_zero_to_one_is_refused(w):
    with pytest.raises(UserError, match=r"is not allowed: use a number from 0 to 1"):
        check_aux_weight(w)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"n_pairs": 1, "val_pairs": 0}, None),
    ({"n_pairs": 5000}, None),
    ({"n_pairs": 0}, "data.n_pairs=0 is not allowed: use an integer from 1 to 5000"),
    ({"n_pairs": 5001}, "data.n_pairs=5001 is not allowed: use an integer from 1 to 5000"),
    ({"n_pairs": True}, "data.n_pairs=True is not allowed"),
    ({"n_pairs": 30000, "test_pairs": 5000}, None),  # a fixed test set lets the training set grow
    ({"n_pairs": 30001, "test_pairs": 1000}, "data.n_pairs=30001 is not allowed: use an integer from 1 to 30000"),
    ({"test_pairs": 5001}, "data.test_pairs=5001 is not allowed: use an integer from 1 to 5000"),
    ({"test_pairs": 0}, "data.test_pairs=0 is not allowed"),
    ({"batch_size": 1, "eval_batch_size": 1}, None),
    ({"batch_size": 0}, "data.batch_size=0 is not allowed: use an integer >= 1"),
    ({"eval_batch_size": 0}, "data.eval_batch_size=0 is not allowed: use an integer >= 1"),
    ({"batch_size": True}, "data.batch_size=True is not allowed"),
    ({"n_pairs": 300, "val_pairs": 299}, None),
    ({"n_pairs": 300, "val_pairs": 300}, "data.val_pairs=300 is not allowed: use an integer from 0 to n_pairs - 1"),
    ({"val_pairs": -1}, "data.val_pairs=-1 is not allowed"),
    ({"val_pairs": True}, "data.val_pairs=True is not allowed"),
])
def test_data_ranges_are_exact_at_their_edges(kwargs, error):
    """Checked when the pre-launch check builds the data module (without its data)."""
    if error is None:
        PairDataModule(**kwargs)
        return
    with pytest.raises(UserError) as refused:
        PairDataModule(**kwargs)
    assert str(refused.value).startswith(error), str(refused.value)


@pytest.mark.parametrize(("overrides", "error"), [
    (["callbacks=best_on_val", "data.val_pairs=100"], None),
    (["callbacks=best_on_val", "data.val_pairs=100", "callbacks.best_on_val.monitor=val/acc"], None),
    (["callbacks=best_on_val", "data.val_pairs=100", "callbacks.best_on_val.monitor=val/accuracy"],
     "callbacks.best_on_val.monitor=val/accuracy is not logged: use one of val/acc, val/loss"),
    (["callbacks=best_on_val", "data.val_pairs=100", "callbacks.best_on_val=null"], None),
    (["callbacks=best_on_val", "~callbacks.best_on_val.monitor"], None),  # monitors nothing: no pairs needed
    # every callback is checked, also after one that monitors nothing
    (["callbacks=best_on_val", "data.val_pairs=100", "~callbacks.best_on_val.monitor",
      "+callbacks.later={monitor:val/accuracy}"], "callbacks.later.monitor=val/accuracy is not logged"),
])
def test_monitored_figures_are_logged_ones_on_validation_pairs(hydra, overrides, error):
    if error is None:
        settings(*overrides)
        return
    with pytest.raises(UserError) as refused:
        settings(*overrides)
    assert str(refused.value).startswith(error), str(refused.value)
