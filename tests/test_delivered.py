"""The delivered model: with a checkpoint chosen on validation pairs, the record's test and
validation figures are those of the chosen epoch's weights, not of the last epoch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mnist_compare.paths import CONF_DIR
from mnist_compare.run.fit import fit


def scored(model, split) -> dict[str, float]:
    """The comparison accuracy and mean loss of `model` on a split, written out."""
    x, target, _ = split
    with torch.no_grad():
        logits = model(x)[0]
    return {"acc": (logits.argmax(1) == target).sum().item() / len(target),
            "loss": F.cross_entropy(logits, target).item()}


def test_an_epoch_chosen_before_the_last_is_the_one_scored_and_recorded(tmp_path, mnist_dir):
    """The checkpoint callback is made to keep the epoch with the *highest* validation loss, which
    (the loss falling from epoch to epoch) is the first of four: deterministic, and a few seconds.
    Scoring the last epoch's weights instead gives other test and validation figures."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["callbacks=best_on_val", "callbacks.best_on_val.mode=max", "data.n_pairs=300",
                                "data.val_pairs=100", "trainer.max_epochs=4", "model.optimizer.lr=0.003",
                                "logger=none", f"data.data_dir={mnist_dir}"])
    record = fit(cfg, tmp_path)
    history = record["history"]
    assert record["epochs"] == 4 and record["selection"] == "checkpoint with max val/loss"
    chosen = record["delivered_epoch"]
    assert chosen == 1 + max(range(4), key=history["val_loss"].__getitem__)
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
