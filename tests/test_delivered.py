"""The delivered model: with a checkpoint chosen on validation pairs, the record's test and
validation figures are those of the chosen epoch's weights, not of the last epoch's."""

from __future__ import annotations

import platform
import time

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mnist_compare.paths import CONF_DIR
from mnist_compare.run.fit import fit


def composed(*overrides: str, data_dir) -> object:
    """The run's config with `overrides`, reading MNIST from the tests' shared folder."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", [*overrides, f"data.data_dir={data_dir}"])


def scored(model, split) -> dict[str, float]:
    """The comparison accuracy and mean loss of `model` on a split, written out."""
    x, target, _ = split
    with torch.no_grad():
        logits = model(x)[0]
    return {"acc": (logits.argmax(1) == target).sum().item() / len(target),
            "loss": F.cross_entropy(logits, target).item()}


def test_an_epoch_chosen_before_the_last_is_the_one_scored_and_recorded(tmp_path, mnist_dir):
    """The checkpoint callback is made to keep the epoch with the *highest* validation loss, which
    (the loss falling from epoch to epoch) is the first: deterministic, and a few seconds. Early
    stopping on the same rule ends the run after its second epoch, of four. Scoring the last
    epoch's weights instead gives other test and validation figures."""
    cfg = composed("callbacks=best_on_val", "callbacks.best_on_val.mode=max", "data.n_pairs=300",
                   "data.val_pairs=100", "trainer.max_epochs=4", "model.optimizer.lr=0.003",
                   "+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping",
                   "+callbacks.stop.monitor=val/loss", "+callbacks.stop.mode=max",
                   "+callbacks.stop.patience=0", "logger=none", data_dir=mnist_dir)
    record = fit(cfg, tmp_path)
    history = record["history"]
    assert record["epochs"] == 2 and record["max_epochs"] == 4 and record["stopped_early"] is True
    assert record["selection"] == "checkpoint with max val/loss"
    chosen = record["delivered_epoch"]
    assert chosen == 1 + max(range(2), key=history["val_loss"].__getitem__)
    assert chosen < record["epochs"]  # else this test could not tell the chosen weights from the last
    # the validation figures are the chosen epoch's, as its validation gave them
    assert record["val_acc"] == history["val_acc"][chosen - 1]
    assert record["val_loss"] == pytest.approx(history["val_loss"][chosen - 1], rel=1e-6)
    assert record["val_loss"] != pytest.approx(history["val_loss"][-1], rel=1e-3)
    # the test figures are the chosen checkpoint's, scored by hand here
    (ckpt,) = tmp_path.glob("**/*.ckpt")
    model = instantiate(cfg.model, _recursive_=False)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    model.eval()
    data = instantiate(cfg.data)
    data.setup("test")
    by_hand = scored(model, data.splits["test"])
    assert record["test_acc"] == pytest.approx(by_hand["acc"], abs=1e-9)
    assert record["test_loss"] == pytest.approx(by_hand["loss"], rel=1e-5)
    assert scored(model, data.splits["val"])["acc"] == pytest.approx(record["val_acc"], abs=1e-9)


def test_without_validation_pairs_the_last_epoch_is_delivered_and_the_best_kept_apart(tmp_path, mnist_dir):
    """The report's protocol: the test pairs after every epoch, the last epoch's model delivered,
    the best epoch on the test pairs recorded beside it (for comparison with the report only)."""
    cfg = composed("data.n_pairs=200", "trainer.max_epochs=3", "logger=none", data_dir=mnist_dir)
    started = time.perf_counter()
    record = fit(cfg, tmp_path)
    took = time.perf_counter() - started
    history = record["history"]
    assert record["selection"] == "last epoch" and record["delivered_epoch"] == record["epochs"] == 3
    assert record["max_epochs"] == 3 and record["stopped_early"] is False
    assert sorted(history) == ["test_acc", "test_aux_acc", "test_loss", "test_rule_acc", "train_acc",
                               "train_aux_acc", "train_loss"]
    assert all(len(v) == 3 for v in history.values())
    for key, values in history.items():
        assert record[key] == values[-1], key
    best = max(history["test_acc"])
    assert record["best_test_acc"] == best and record["best_epoch"] == 1 + history["test_acc"].index(best)
    assert "val_acc" not in record
    assert record["n_params"] == 208_172  # shallow, no weight sharing
    assert 0 < record["train_time_s"] <= took and record["train_time_s"] == round(record["train_time_s"], 3)
    assert record["machine"] == (platform.processor() or platform.machine()) and record["device"] == "cpu"
    assert record["threads"] == 1


def test_a_fast_dev_run_is_one_epoch_of_one_epoch(tmp_path, mnist_dir):
    cfg = composed("trainer=fast_dev_run", "logger=none", data_dir=mnist_dir)
    record = fit(cfg, tmp_path)
    assert record["epochs"] == record["max_epochs"] == record["delivered_epoch"] == 1
    assert record["stopped_early"] is False


def test_validation_pairs_without_a_chooser_deliver_the_last_epoch_scored_once_and_logged(tmp_path, mnist_dir,
                                                                                       capfd):
    """No checkpoint callback picks an epoch: the last one is delivered, its test figures are
    logged to TensorBoard at that epoch, and Lightning prints no table of its own."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = composed("data.n_pairs=200", "data.val_pairs=50", "trainer.max_epochs=2", "logger=tensorboard",
                   "checkpoint_after_s=null", data_dir=mnist_dir)
    record = fit(cfg, tmp_path)
    assert record["selection"] == "last epoch" and record["delivered_epoch"] == record["epochs"] == 2
    assert "test_acc" not in record["history"] and 0 < record["test_acc"] < 1
    printed = capfd.readouterr()
    assert "Test metric" not in printed.out + printed.err and "test/acc" not in printed.out + printed.err
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("test/acc")] == [(2, record["test_acc"])]


def test_the_seed_fixes_the_starting_weights_and_a_resumed_run_trains_only_what_is_left(tmp_path, mnist_dir,
                                                                                      monkeypatch):
    """The seed fixes the weights' start, not only the pairs, whatever seed the process set
    before; a run that finds its resume checkpoint continues from it (same history, fewer steps)
    and counts the earlier attempts' training time."""
    from mnist_compare.models.module import CompareModule
    from mnist_compare.run import cluster

    cfg = composed("data.n_pairs=200", "trainer.max_epochs=2", "logger=none", "checkpoint_after_s=0",
                   data_dir=mnist_dir)
    first = fit(cfg, tmp_path / "a")
    steps = []  # the weights each training step starts from
    step = CompareModule.training_step
    monkeypatch.setattr(CompareModule, "training_step", lambda self, *a, **k: steps.append(
        [p.detach().clone() for p in self.parameters()]) or step(self, *a, **k))
    one = OmegaConf.merge(cfg, {"seed": 1})
    torch.manual_seed(12345)  # whatever the global generator holds before a run
    second = fit(one, tmp_path / "b")  # seed 1 after seed 0, in one process: a sweep's worker
    torch.manual_seed(1)
    start = instantiate(one.model, _recursive_=False).parameters()
    assert all(torch.equal(a, b) for a, b in zip(steps[0], start, strict=True))  # seed 1's weights, not 0's
    assert second["history"] != first["history"]
    fresh, steps[:] = len(steps), []
    again = fit(cfg, tmp_path / "a")  # from its last.ckpt
    assert len(steps) < fresh and again["history"] == first["history"] and again["epochs"] == 2
    monkeypatch.setattr(cluster, "earlier_train_time_s", lambda trainer: 100.0)  # as if resumed after 100 s
    assert fit(cfg, tmp_path / "d")["train_time_s"] > 100


def test_a_diverged_run_names_its_non_finite_figures():
    from mnist_compare.run.fit import NonFiniteRun, measured_record

    cfg = OmegaConf.create({"trainer": {"max_epochs": 1}})
    nan = float("nan")
    history = {"train/loss": [nan], "train/acc": [nan], "test/loss": [nan], "test/acc": [0.5], "test/aux_acc": [nan]}
    with pytest.raises(NonFiniteRun) as raised:
        measured_record(cfg, 10, history, {}, 1, 1, "last epoch", 1.0, "cpu")
    assert str(raised.value) == ("non-finite figures (train_loss, train_acc, test_loss, test_aux_acc, ...): the model "
                                 "diverged; try a smaller model.optimizer.lr")
    with pytest.raises(NonFiniteRun) as raised:
        measured_record(cfg, 10, {"train/loss": [nan], "test/acc": [0.5]}, {}, 1, 1, "last epoch", 1.0, "cpu")
    assert str(raised.value) == ("non-finite figures (train_loss, history.train_loss): the model diverged; try a "
                                 "smaller model.optimizer.lr")
    four = {"train/loss": [nan], "train/acc": [nan]}  # each in the record and in its history
    with pytest.raises(NonFiniteRun, match=r"\(train_loss, train_acc, history.train_loss, history.train_acc\): "):
        measured_record(cfg, 10, four, {}, 1, 1, "last epoch", 1.0, "cpu")
    with pytest.raises(NonFiniteRun, match=r"\(train_loss, train_acc, test_loss, history.train_loss, \.\.\.\): "):
        measured_record(cfg, 10, four, {"test": {"loss": nan}}, 1, 1, "checkpoint", 1.0, "cpu")


def test_the_figures_are_the_last_epochs_and_the_best_epoch_on_test_is_kept_apart():
    from mnist_compare.run.fit import figures

    out = figures({"train/loss": [0.9, 0.5, 0.4], "test/acc": [0.5, 0.7, 0.6]}, {})
    assert out["train_loss"] == 0.4 and out["test_acc"] == 0.6
    assert (out["best_test_acc"], out["best_epoch"]) == (0.7, 2)
    assert out["history"] == {"train_loss": [0.9, 0.5, 0.4], "test_acc": [0.5, 0.7, 0.6]}
    assert "best_test_acc" not in figures({"train/loss": [0.9]}, {})  # no per-epoch test figure: none
    chosen = figures({"train/loss": [0.9], "val/acc": [0.6]}, {"test": {"acc": 0.65}})
    assert chosen["test_acc"] == 0.65 and "best_test_acc" not in chosen


def test_ctrl_c_during_training_ends_the_run_as_an_interrupt_and_hands_ctrl_c_back(tmp_path, mnist_dir, monkeypatch):
    """Lightning turns Ctrl-C into exit(1) and ignores further ones; the run raises
    KeyboardInterrupt instead (no record: the sweep stops) and Ctrl-C works again."""
    import signal

    from mnist_compare.models.module import CompareModule

    def pressed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(CompareModule, "training_step", pressed)
    cfg = composed("data.n_pairs=200", "trainer.max_epochs=2", "logger=none", "checkpoint_after_s=null",
                   data_dir=mnist_dir)
    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(cfg, tmp_path)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
