"""The collector's statistics (collect/stats.py) function by function, on hand-made inputs with
known answers: fast, and each case kills a plausible bug that the whole-collection tests let through
(found by mutation testing, docs/developer.md)."""

from __future__ import annotations

from mnist_compare.collect.runs import UNSET
from mnist_compare.collect.stats import _changes, _copy_of


def test_a_copy_is_a_key_that_follows_its_source_in_this_config():
    """`model.weight_sharing` copies `ws`, `model.pipe.*` copies `arch.pipe.*`: only while equal."""
    assert _copy_of("model.weight_sharing", {"ws": True, "model.weight_sharing": True}) == "ws"
    assert _copy_of("model.aux_loss_weight", {"aux": 0.5, "model.aux_loss_weight": 0.5}) == "aux"
    assert _copy_of("model.pipe.dropout", {"arch.pipe.dropout": 0.1, "model.pipe.dropout": 0.1}) == "arch.pipe.dropout"
    assert _copy_of("model.pipe.dropout", {"arch.pipe.dropout": 0.1, "model.pipe.dropout": 0.2}) is None  # set apart
    assert _copy_of("model.pipe.dropout", {"model.pipe.dropout": 0.2}) is None  # no source in this config
    assert _copy_of("arch.pipe.dropout", {"arch.pipe.dropout": 0.1}) is None  # a source is no copy
    assert _copy_of("seed", {"seed": 1, "arch.": 1}) is None  # no dotted rest: no source


def test_changes_name_each_differing_setting_once_unset_counting_as_a_value():
    assert _changes({}, {"model.scheduler": None}) == [f"model.scheduler: {UNSET} -> null"]
    assert _changes({"model.scheduler": None}, {}) == [f"model.scheduler: null -> {UNSET}"]
    # a copy that follows its source in both configs is said once, under the source's name
    base = {"arch.pipe.dropout": 0.1, "model.pipe.dropout": 0.1}
    assert _changes(base, {"arch.pipe.dropout": 0.2, "model.pipe.dropout": 0.2}) == ["arch.pipe.dropout: 0.1 -> 0.2"]
    # set apart from its source in the baseline: both differences are real
    apart = {"arch.pipe.dropout": 0.1, "model.pipe.dropout": 0.3}
    assert _changes(apart, {"arch.pipe.dropout": 0.2, "model.pipe.dropout": 0.2}) == [
        "arch.pipe.dropout: 0.1 -> 0.2", "model.pipe.dropout: 0.3 -> 0.2"]
    # the copy changed, its source did not: the copy's change is the one to name
    assert _changes(apart, {"arch.pipe.dropout": 0.1, "model.pipe.dropout": 0.1}) == ["model.pipe.dropout: 0.3 -> 0.1"]
    # a copy new in the variant, following a source that is new too: said once
    assert _changes({}, {"arch.pipe.dropout": 0.2, "model.pipe.dropout": 0.2}) == [f"arch.pipe.dropout: {UNSET} -> 0.2"]
