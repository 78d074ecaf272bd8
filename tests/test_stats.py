"""The collector's statistics (collect/stats.py) function by function, on hand-made inputs with
known answers: fast, and each case kills a plausible bug that the whole-collection tests let through
(found by mutation testing, docs/developer.md)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats
from statsmodels.stats.multitest import multipletests

from mnist_compare.collect.runs import UNSET
from mnist_compare.collect.stats import (
    _changes,
    _copy_of,
    _effect_name,
    _holm,
    _mean_if_all,
    _paired_test,
    _pvalues,
    accuracy_interval,
    including,
    not_learned,
    t_interval,
    wilcoxon_floor,
    wilcoxon_text,
)


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


def test_t_interval_is_the_mean_plus_minus_the_t_quantile_times_the_standard_error():
    values = np.array([0.01, 0.03, 0.02, 0.05])
    half = stats.t.ppf(0.975, 3) * values.std(ddof=1) / 2
    assert t_interval(values) == pytest.approx((values.mean() - half, values.mean() + half), abs=1e-15)
    _, high = t_interval(values, level=0.9)
    assert high - values.mean() == pytest.approx(stats.t.ppf(0.95, 3) * values.std(ddof=1) / 2)
    assert all(math.isnan(v) for v in t_interval(np.array([0.5])))
    two = t_interval(np.array([0.1, 0.3]))  # two values: an interval on 1 degree of freedom
    assert two[0] == pytest.approx(0.2 - 12.706204736 * 0.1414213562 / math.sqrt(2), abs=1e-8)


def test_accuracy_interval_is_a_logit_t_interval_and_none_where_it_would_pretend():
    values = np.array([0.80, 0.83, 0.85, 0.81])
    low, high = t_interval(special.logit(values))
    assert accuracy_interval(values) == pytest.approx((special.expit(low), special.expit(high), ""))
    assert accuracy_interval(np.array([0.8, 0.9]))[2] == "n = 2 < 3 seeds: no interval"
    assert math.isnan(accuracy_interval(np.array([0.8, 0.9]))[0])
    assert accuracy_interval(np.array([0.7, 0.8, 0.9]))[2] == ""  # three seeds: an interval
    assert accuracy_interval(np.array([0.8, 0.8, 0.8]))[2] == "no variance: every seed gives 0.8000; no interval"
    for edge in ([1.0, 0.9, 0.95], [0.0, 0.1, 0.2]):
        low, high, note = accuracy_interval(np.array(edge))
        assert math.isnan(low) and math.isnan(high) and note == "an accuracy of exactly 0 or 1: no logit interval"
    low, high, _ = accuracy_interval(np.array([0.97, 0.999, 0.99]))
    assert 0 < low < high < 1  # the plain t interval would cross 1 here


def test_paired_test_gives_scipys_t_and_wilcoxon_or_says_why_not():
    diff = np.array([0.01, 0.02, 0.015, 0.03, -0.005])
    row = _paired_test(diff)
    assert row["n_pairs"] == 5 and row["mean_diff"] == pytest.approx(diff.mean())
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(t_interval(diff))
    assert row["p_ttest"] == pytest.approx(stats.ttest_1samp(diff, 0.0).pvalue)
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(diff).pvalue) and row["status"] == ""
    flat = _paired_test(np.array([0.02, 0.02, 0.02]))
    assert flat["status"] == "no variance: every seed differs by +0.0200; no test, not significant"
    assert all(math.isnan(flat[k]) for k in ("ci95_low", "ci95_high", "p_ttest", "p_wilcoxon"))
    assert _pvalues(np.array([0.0, 0.0, 1e-12, -1e-12]))[1] == 1.0  # all within float noise of 0: no signed ranks


def test_holm_adjusts_one_family_an_untested_row_counting_as_p_one():
    table = pd.DataFrame({"mean_diff": [0.02, -0.03, 0.01, 0.0], "p_ttest": [0.01, 0.004, 0.3, math.nan],
                          "status": ["", "", "", "no variance: every seed differs by +0.0000; no test, "
                                                 "not significant"],
                          "_not_learned": [0, 2, 0, 1]})
    out = _holm(table.copy())
    expected = multipletests([0.01, 0.004, 0.3, 1.0], alpha=0.05, method="holm")[1]
    assert out["p_holm"].iloc[:3].tolist() == pytest.approx(expected[:3]) and math.isnan(out["p_holm"].iloc[3])
    assert out["verdict"].tolist() == [
        "gain (Holm p < 0.05)", "loss (Holm p < 0.05); includes 2 runs that learned nothing",
        "not significant at 5% (Holm)",
        "no variance: every seed differs by +0.0000; no test, not significant; includes 1 run that learned nothing"]
    assert "status" not in out and "_not_learned" not in out
    assert _holm(pd.DataFrame()).empty
    just = _holm(pd.DataFrame({"mean_diff": [0.01], "p_ttest": [0.05], "status": [""]}))  # p = alpha: not below it
    assert just["verdict"].iloc[0] == "not significant at 5% (Holm)"


def test_effect_names_say_what_the_cell_changes_from_the_baseline():
    assert _effect_name((True, 0.0), (False, 0.0)) == "WS"
    assert _effect_name((False, 0.5), (False, 0.0)) == "aux 0.5"
    assert _effect_name((True, 0.5), (False, 0.0)) == "WS + aux 0.5"
    assert _effect_name((False, 0.0), (True, 0.0)) == "no WS"
    assert _effect_name((True, 0.0), (True, 0.25)) == "no aux"
    assert including(0) == "" and including(1) == "; includes 1 run that learned nothing"
    assert including(3) == "; includes 3 runs that learned nothing"


def test_wilcoxon_floor_and_the_text_that_hides_a_p_that_cannot_reach_alpha():
    assert wilcoxon_floor(3) == pytest.approx(0.25) and wilcoxon_floor(5) == pytest.approx(0.0625)
    assert wilcoxon_floor(6) == pytest.approx(0.03125) and wilcoxon_floor(0) == 1.0
    assert wilcoxon_text(0.25, 3) == "— (n = 3: cannot go below 0.25)"
    assert wilcoxon_text(0.0625, 5) == "— (n = 5: cannot go below 0.0625)"
    assert wilcoxon_text(0.03125, 6) == "0.0312" and wilcoxon_text(math.nan, 6) == "—"


def test_a_figure_is_averaged_only_when_every_run_has_it():
    assert _mean_if_all(pd.Series([0.5, 0.7])) == pytest.approx(0.6)
    assert math.isnan(_mean_if_all(pd.Series([0.5, None]))) and math.isnan(_mean_if_all(None))
    assert math.isnan(_mean_if_all(pd.Series([0.5, "x"]))) and math.isnan(_mean_if_all(pd.Series([], dtype=float)))
    assert math.isnan(_mean_if_all(pd.Series([0.5, math.inf])))


def test_runs_that_learned_nothing_are_named_with_their_seeds():
    runs = pd.DataFrame({"seed": [0, 1, 2], "learned_nothing": [False, True, True],
                         "learned_nothing_why": ["", "one class predicted throughout", "at chance"]})
    assert not_learned(runs) == ("2 of 3 runs learned nothing (seeds 1, 2: one class predicted throughout, ...), "
                                 "averaged in")
    assert not_learned(runs.iloc[:2]) == "1 of 2 runs learned nothing (seed 1: one class predicted throughout), " \
                                         "averaged in"
    assert not_learned(runs.iloc[:1]) == "" and not_learned(runs.drop(columns="learned_nothing")) == ""


def _cells(tmp_path, cells, **extra):
    """A loaded sweep of {(arch, ws, aux): [acc per seed 0, 1, ...]}."""
    from test_collect import fake_run

    from mnist_compare.collect.runs import load_sweep

    for (arch, ws, aux), accs in cells.items():
        for seed, acc in enumerate(accs):
            fake_run(tmp_path, arch, ws, aux, seed, acc, **extra)
    return load_sweep(tmp_path)


def _runs(tmp_path, cells, seeds=range(4), **extra):
    """A loaded sweep of deep-MLP cells {(ws, aux): [acc per seed]}, seeds 0 to len(seeds) - 1."""
    return _cells(tmp_path, {("deep", ws, aux): accs[:len(seeds)] for (ws, aux), accs in cells.items()}, **extra)


def test_a_groups_summary_says_every_figure_of_its_runs(tmp_path):
    from mnist_compare.collect.stats import summarise_groups

    accs = [0.80, 0.84, 0.82, 0.86]
    sweep = _runs(tmp_path, {(False, 0.0): accs})
    (row,) = summarise_groups(sweep.runs, sweep.labels).to_dict("records")
    assert (row["arch"], row["ws"], row["aux"], row["n"]) == ("deep", False, 0.0, 4)
    assert row["test_acc_mean"] == pytest.approx(0.83) and row["test_acc_std"] == pytest.approx(np.std(accs, ddof=1))
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(accuracy_interval(np.array(accs))[:2])
    assert row["best_epoch_on_test_mean"] == pytest.approx(0.84)  # fake runs: best epoch = acc + 0.01
    assert row["best_epoch_on_test_std"] == pytest.approx(np.std(accs, ddof=1))
    assert row["test_aux_acc_mean"] == pytest.approx(0.9) and row["test_rule_acc_mean"] == pytest.approx(0.95)
    assert row["train_time_s_mean"] == pytest.approx(2.0) and math.isnan(row["val_acc_mean"])
    assert row["n_params"] == sweep.runs["n_params"].iloc[0] and row["n_params"] > 1000
    assert row["delivered"] == "last-epoch test accuracy" and row["note"] == ""
    assert row["context"] == "deep" and row["group"] == 0 and row["sweep"] == str(tmp_path)


def test_a_single_run_group_has_no_spread_and_says_so(tmp_path):
    from mnist_compare.collect.stats import summarise_groups

    sweep = _runs(tmp_path, {(False, 0.0): [0.8]}, seeds=range(1))
    (row,) = summarise_groups(sweep.runs, sweep.labels).to_dict("records")
    assert row["n"] == 1 and math.isnan(row["test_acc_std"]) and math.isnan(row["best_epoch_on_test_std"])
    assert row["note"] == "n = 1 < 3 seeds: no interval" and math.isnan(row["ci95_low"])


def test_paired_effects_say_why_a_comparison_was_not_made(tmp_path):
    from mnist_compare.collect.stats import paired_effects

    only = _runs(tmp_path / "only", {(False, 0.0): [0.8, 0.81, 0.82, 0.83]})
    effects, notes = paired_effects(only.runs, only.labels)
    assert effects.empty and notes == ["deep: only the baseline cell (WS off, aux off), nothing to compare it with"]
    no_base = _runs(tmp_path / "nobase", {(False, 0.5): [0.8] * 4, (True, 0.5): [0.81] * 4})
    effects, notes = paired_effects(no_base.runs, no_base.labels)
    assert effects.empty and notes == ["deep: no baseline cell (WS off, aux off; or WS on, aux off when WS off was "
                                       "not run) among WS off, aux 0.5, WS on, aux 0.5"]
    ws_base = _runs(tmp_path / "wsbase", {(True, 0.0): [0.80, 0.81, 0.79, 0.80], (True, 0.5): [0.85, 0.87, 0.84, 0.86]})
    effects, notes = paired_effects(ws_base.runs, ws_base.labels)
    (row,) = effects.to_dict("records")
    assert row["baseline"] == "WS on, aux off" and row["effect"] == "aux 0.5" and not notes
    assert row["mean_diff"] == pytest.approx(0.055)


def test_a_copy_set_apart_before_its_source_existed_is_still_a_change():
    """The baseline set `model.pipe.dropout` by itself; the variant has the source and the copy following it."""
    assert _changes({"model.pipe.dropout": 0.3}, {"arch.pipe.dropout": 0.2, "model.pipe.dropout": 0.2}) == [
        f"arch.pipe.dropout: {UNSET} -> 0.2", "model.pipe.dropout: 0.3 -> 0.2"]


def _group(arch, ws=False, aux=0.0, seeds=(0, 1), **flat):
    return pd.DataFrame([{"arch": arch, "ws": ws, "aux": aux, "pair": f"seed={s} data.seed={s}",
                          "flat": {"arch.name": arch, **flat}, "context": arch} for s in seeds])


def test_the_counterpart_is_the_same_cell_of_the_same_arch_or_the_one_named():
    from mnist_compare.collect.stats import BY_DIFFERENCE, _counterpart

    deep, shallow = _group("deep", **{"arch.pipe.hidden": 20}), _group("shallow", **{"arch.pipe.hidden": 10})
    variant = _group("deep", **{"model.pipe.dropout": 0.2}).iloc[0]
    found, how = _counterpart(variant, [shallow, deep])
    assert found is deep and how == ""
    # a one-run baseline group is a group like any other
    single = _group("deep", seeds=(0,))
    found, how = _counterpart(variant, [single])
    assert found is single and how == ""
    # another cell (ws, aux) is never a counterpart
    found, how = _counterpart(variant, [_group("deep", ws=True, seeds=(0,)), _group("deep", aux=0.5, seeds=(0,))])
    assert found is None and how == "the baseline folder has no group with arch=deep, ws=false, aux=0"
    # an arch the baseline lacks: the smallest config difference, said; an arch named by --pair: that one only
    new = _group("deep_drop", **{"arch.pipe.hidden": 20}).iloc[0]
    found, how = _counterpart(new, [shallow, deep])
    assert found is deep and how == BY_DIFFERENCE
    one_run = _group("deep", seeds=(3,), **{"arch.pipe.hidden": 20})
    assert _counterpart(new, [one_run])[0] is one_run
    assert _counterpart(new, [one_run])[1] == BY_DIFFERENCE
    found, how = _counterpart(new, [deep], pairs={"deep_drop": "shallow"})
    assert found is None and how == "the baseline folder has no group with arch=shallow, ws=false, aux=0"
    found, how = _counterpart(new, [shallow, deep], pairs={"deep_drop": "shallow"})
    assert found is shallow and how == ""


def test_wilcoxon_text_spells_small_p_values_in_lower_case():
    assert wilcoxon_text(1.2e-5, 20) == "1.2e-05" and wilcoxon_text(0.0123456, 10) == "0.0123"


def test_two_equally_close_baselines_are_no_counterpart_and_both_are_named():
    from mnist_compare.collect.stats import _counterpart

    a = _group("deep", seeds=(0,), **{"arch.pipe.hidden": 20}).assign(context="deep lr=0.01")
    b = _group("deep", seeds=(0,), **{"arch.pipe.hidden": 20}).assign(context="deep lr=0.1")
    variant = _group("deep", **{"arch.pipe.hidden": 20, "model.pipe.dropout": 0.2}).iloc[0]
    found, how = _counterpart(variant, [a, b])
    assert found is None and how == ("2 baseline groups differ from it in 1 setting(s) each (deep lr=0.01; "
                                     "deep lr=0.1): no single counterpart, not paired")


def _runs_of(folder, arch, accs, ws=False, aux=0.0, group=None, bad=(), **flat):
    """Runs of one group as the collector holds them: `accs` {seed: test accuracy}."""
    return [{"sweep": folder, "group_id": group or f"{folder}-{arch}-{ws}-{aux}-{sorted(flat.items())}",
             "arch": arch, "ws": ws, "aux": aux, "pair": f"seed={s} data.seed={s}", "test_acc": acc,
             "flat": {"arch.name": arch, **flat}, "context": arch, "learned_nothing": s in bad}
            for s, acc in accs.items()]


def test_variant_effects_pair_each_later_group_and_say_why_not_in_order():
    from mnist_compare.collect.stats import variant_effects

    base = {s: 0.80 + 0.01 * s for s in range(4)}
    runs = pd.DataFrame([
        *_runs_of("A", "deep", base, group="zz"),  # group ids out of sorted order: the folders' order is kept
        *_runs_of("A", "shallow", {0: 0.7}, group="aa"),
        *_runs_of("B", "deep", {s: a + 0.02 + 0.001 * s for s, a in base.items()}, group="y2",
                  **{"model.pipe.dropout": 0.2}),
        *_runs_of("B", "deep", {0: 0.9, 1: 0.91}, ws=True, group="y0"),  # no such cell in A
        *_runs_of("B", "shallow", {0: 0.72}, group="y1"),  # one run, one seed in common
        *_runs_of("B", "deep", {0: 0.9, 1: 0.91}, aux=0.5, group="y3"),  # no such cell in A either
        *_runs_of("B", "deep", {0: 0.81, 1: 0.83}, group="x9", **{"model.pipe.dropout": 0.3}),  # two in common
        *_runs_of("B", "deep", {s: a - 0.01 + 0.002 * s for s, a in base.items()}, group="x8", bad=(2,)),  # a rerun
        *_runs_of("B", "deep", {10: 0.8, 11: 0.8}, group="x7", **{"model.pipe.dropout": 0.4,
                                                                   "model.optimizer.lr": 0.1}),
    ])
    effects, notes = variant_effects(runs, ["A", "B"])
    assert notes == [
        "B: deep, WS on, aux off: the baseline folder has no group with arch=deep, ws=true, aux=0",
        "B: shallow, WS off, aux off: 1 seed(s) in common with its baseline counterpart (fewer than 2): no paired "
        "test (the same settings as the baseline: its runs were pooled with the baseline's group)",
        "B: deep, WS off, aux 0.5: the baseline folder has no group with arch=deep, ws=false, aux=0.5",
        "B: deep, WS off, aux off: 0 seed(s) in common with its baseline counterpart (fewer than 2): no paired test "
        f"(differs in model.optimizer.lr: {UNSET} -> 0.1; model.pipe.dropout: {UNSET} -> 0.4)"]
    assert list(effects.columns[:5]) == ["arch", "ws", "aux", "variant", "settings"] and "_not_learned" not in effects
    assert effects["settings"].tolist() == [f"model.pipe.dropout: {UNSET} -> 0.2",
                                            f"model.pipe.dropout: {UNSET} -> 0.3", "(none)"]
    assert effects["n_pairs"].tolist() == [4, 2, 4]
    assert effects["mean_diff"].tolist() == pytest.approx([0.0215, 0.015, -0.007])
    assert effects["verdict"].iloc[2].endswith("; includes 1 run that learned nothing")
    assert (effects["arch"] == "deep").all() and (effects["variant"] == "B").all()


def test_variant_effects_without_runs_on_either_side_say_so():
    from mnist_compare.collect.stats import variant_effects

    effects, notes = variant_effects(pd.DataFrame(), ["A", "B"])
    assert effects.empty and notes == ["the baseline folder A has no finished run: nothing to pair with",
                                       "B: no finished run"]
    only_b = pd.DataFrame(_runs_of("B", "deep", {0: 0.8, 1: 0.81}))
    effects, notes = variant_effects(only_b, ["A", "B"])
    assert effects.empty and notes == ["the baseline folder A has no finished run: nothing to pair with"]


def test_a_groups_summary_says_mixed_deliveries_and_spreads_only_what_every_run_has(tmp_path):
    from mnist_compare.collect.stats import summarise_groups

    sweep = _runs(tmp_path, {(False, 0.0): [0.80, 0.84, 0.82, 0.86]})
    runs = sweep.runs.copy()
    runs.loc[runs.index[0], "delivered"] = "the validation-chosen epoch"
    runs.loc[runs.index[1], "best_test_acc"] = math.nan  # one run without the report's best-epoch figure
    (row,) = summarise_groups(runs, sweep.labels).to_dict("records")
    assert row["delivered"] == "mixed: last-epoch test accuracy; the validation-chosen epoch"
    assert math.isnan(row["best_epoch_on_test_mean"]) and math.isnan(row["best_epoch_on_test_std"])
    two = summarise_groups(sweep.runs.iloc[:2], sweep.labels).iloc[0]  # two runs: a spread, no interval
    assert two["test_acc_std"] == pytest.approx(np.std([0.80, 0.84], ddof=1))
    assert two["best_epoch_on_test_std"] == pytest.approx(np.std([0.81, 0.85], ddof=1))
    assert list(summarise_groups(runs, sweep.labels).columns) == [
        *sweep.labels, "n", "delivered", "test_acc_mean", "test_acc_std", "ci95_low", "ci95_high", "note",
        "best_epoch_on_test_mean", "best_epoch_on_test_std", "val_acc_mean", "test_aux_acc_mean",
        "test_rule_acc_mean", "train_time_s_mean", "n_params", "sweep", "context", "group"]


def test_paired_effects_rows_name_the_context_not_the_cell_and_cells_come_in_table_order(tmp_path):
    from mnist_compare.collect.stats import paired_effects

    sweep = _runs(tmp_path / "both", {(False, 0.0): [0.80, 0.81, 0.79, 0.80], (True, 0.0): [0.82, 0.83, 0.80, 0.84]})
    effects, _ = paired_effects(sweep.runs, sweep.labels)
    context = [c for c in sweep.labels if c not in ("ws", "aux")]
    assert list(effects.columns[:len(context) + 2]) == [*context, "effect", "baseline"]
    assert "ws" not in effects.columns and "aux" not in effects.columns
    # the cells are said in Table-1 order whatever order the runs were read in
    no_base = _runs(tmp_path / "nobase", {(False, 0.5): [0.8] * 4, (True, 0.5): [0.81] * 4})
    _, notes = paired_effects(no_base.runs.iloc[::-1], no_base.labels)
    assert notes == ["deep: no baseline cell (WS off, aux off; or WS on, aux off when WS off was not run) among "
                     "WS off, aux 0.5, WS on, aux 0.5"]


def test_paired_effects_refuse_a_cell_holding_two_groups(tmp_path):
    from mnist_compare.collect.stats import paired_effects

    sweep = _runs(tmp_path, {(False, 0.0): [0.80, 0.81, 0.79, 0.80], (True, 0.5): [0.82, 0.83, 0.80, 0.84]})
    runs = sweep.runs.copy()
    runs.loc[(runs["ws"] == True) & (runs["seed"] == 0), "group"] = 99  # noqa: E712 (a column, not a truth value)
    with pytest.raises(AssertionError, match=r"^deep: cell WS on, aux 0.5 holds several groups$"):
        paired_effects(runs, sweep.labels)


def test_paired_effects_test_from_two_seeds_and_go_on_past_a_context_or_cell_they_cannot_test(tmp_path):
    from mnist_compare.collect.stats import paired_effects

    base, up = [0.80, 0.81, 0.79, 0.80], [0.83, 0.85, 0.80, 0.84]
    sweep = _cells(tmp_path, {
        ("shallow", False, 0.5): up,  # no baseline here
        ("deep", False, 0.0): base[:1], ("deep", True, 0.0): up[:1],  # a one-seed baseline
        ("conv", False, 0.0): base, ("conv", True, 0.0): up[:1],  # one seed in common
        ("conv", False, 0.5): up[:2],  # two in common: tested
        ("conv", True, 0.5): up,
    })
    effects, notes = paired_effects(sweep.runs, sweep.labels)
    assert list(effects["arch"]) == ["conv", "conv"] and list(effects["effect"]) == ["aux 0.5", "WS + aux 0.5"]
    assert list(effects["n_pairs"]) == [2, 4]
    assert len(notes) == 3 and "conv, WS on, aux off: 1 seed(s) in common" in notes[-1]
    two = _cells(tmp_path / "two", {("deep", False, 0.0): base[:2], ("deep", True, 0.0): up[:2]})
    (row,) = paired_effects(two.runs, two.labels)[0].to_dict("records")  # a two-seed baseline: tested
    assert row["n_pairs"] == 2 and row["mean_diff"] == pytest.approx(0.035)
    alone = _cells(tmp_path / "alone", {("deep", False, 0.0): base, ("conv", False, 0.0): base,
                                        ("conv", True, 0.0): up})
    effects, notes = paired_effects(alone.runs, alone.labels)  # deep's baseline alone, then conv
    assert list(effects["arch"]) == ["conv"] and notes == [
        "deep: only the baseline cell (WS off, aux off), nothing to compare it with"]


def test_paired_effects_come_in_table_1_order(tmp_path):
    from mnist_compare.collect.stats import paired_effects

    accs = [0.80, 0.81, 0.79, 0.80]
    sweep = _cells(tmp_path, {("deep", ws, aux): [a + 0.01 * ws + aux / 10 for a in accs]
                              for ws in (False, True) for aux in (0.0, 0.5)})
    effects, _ = paired_effects(sweep.runs, sweep.labels)
    assert list(effects["effect"]) == ["WS", "aux 0.5", "WS + aux 0.5"]


def test_seeds_needed_beyond_a_million_is_infinite_and_one_sided_tests_need_fewer():
    from mnist_compare.collect.stats import power, seeds_needed

    # a standardised effect of 0.002 needs more than a million seeds: said as inf, not a failed root search
    assert seeds_needed(0.002, 1.0, 0.05) == math.inf and seeds_needed(0.0, 1.0, 0.05) == math.inf
    # 0.0026 needs more than a million two-sided, fewer one-sided: the edge is checked for the test asked for
    assert seeds_needed(0.0026, 1.0, 0.05) == math.inf
    one_sided = seeds_needed(0.0026, 1.0, 0.05, "larger")
    assert 900_000 < one_sided < 10**6
    assert power(0.0026, one_sided, 0.05, "larger") >= 0.8 > power(0.0026, one_sided - 1, 0.05, "larger")
    assert math.isnan(seeds_needed(0.01, 0.0, 0.05)) and math.isnan(seeds_needed(math.nan, 1.0, 0.05))


def test_two_seeds_are_the_fewest_a_paired_test_can_have():
    from mnist_compare.collect.stats import detectable, seeds_needed

    assert seeds_needed(20.0, 1.0, 0.05) == 2.0  # an effect 20 spreads wide: two seeds already
    assert seeds_needed(8.0, 1.0, 0.05, "larger") == 2.0 and seeds_needed(8.0, 1.0, 0.05) == 3.0  # one-sided: fewer
    assert 0.2 < detectable(0.02, 2, 0.05) < 0.3 and math.isnan(detectable(0.02, 1, 0.05))
    assert math.isnan(detectable(0.0, 10, 0.05)) and math.isnan(detectable(math.inf, 10, 0.05))


def test_a_groups_summary_joins_what_differs_within_it(tmp_path):
    from mnist_compare.collect.stats import not_learned, summarise_groups

    sweep = _runs(tmp_path, {(False, 0.0): [0.80, 0.84, 0.82, 0.86]}, seeds=range(2))
    runs = sweep.runs.copy()
    runs["sweep"] = ["first", "second"]
    runs["learned_nothing"], runs["learned_nothing_why"] = [True, False], ["at chance", ""]
    row = summarise_groups(runs, sweep.labels).iloc[0]
    assert row["sweep"] == "first, second" and row["n_params"] == runs["n_params"].iloc[0]
    assert row["note"] == f"n = 2 < 3 seeds: no interval; {not_learned(runs)}"
    runs["n_params"] = [100, 101]  # two models under one group: no single count
    assert math.isnan(summarise_groups(runs, sweep.labels).iloc[0]["n_params"])
    assert math.isnan(summarise_groups(runs.drop(columns="n_params"), sweep.labels).iloc[0]["n_params"])


def test_a_paired_test_says_when_the_t_test_gave_no_p_value_and_scipy_stays_quiet():
    import warnings

    assert _paired_test(np.array([0.01, 0.02, 0.04]))["status"] == ""
    assert _paired_test(np.array([0.01, 0.02, np.nan]))["status"] == "t-test gave no p-value"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # whatever scipy warns of (zeros among the differences, in some versions)
        p_t, p_w = _pvalues(np.array([0.0, 0.01, 0.02, -0.01, 0.03, 0.0]))
    assert 0 < p_t < 1 and 0 < p_w < 1
    # differences that vary by more than the tolerance, each within it of zero: no signed-rank test
    assert _pvalues(np.array([1e-9, 1e-9, -5e-10, 0.0, 8e-10]))[1] == 1.0


def test_runs_without_the_learned_nothing_column_count_as_learned():
    from mnist_compare.collect.stats import _flags

    cell = pd.DataFrame({"pair": ["seed=0", "seed=1"], "learned_nothing": [True, False]}, index=[5, 7])
    assert _flags(cell).to_dict() == {"seed=0": True, "seed=1": False}
    old = _flags(cell.drop(columns="learned_nothing"))  # records from before the flag
    assert old.to_dict() == {"seed=0": False, "seed=1": False} and old.dtype == bool


def test_no_variance_includes_a_spread_of_exactly_the_tolerance_and_intervals_take_their_level():
    from mnist_compare.collect.stats import TOLERANCE, no_variance

    assert no_variance(np.array([0.5, 0.5 + TOLERANCE / 2])) and no_variance(np.array([0.0, TOLERANCE]))
    assert not no_variance(np.array([0.0, 2 * TOLERANCE]))
    acc = np.array([0.80, 0.84, 0.82, 0.86])
    logits = special.logit(acc)
    half = stats.t.ppf(0.95, 3) * logits.std(ddof=1) / 2  # a 90% interval: the t's 95th percentile
    low, high, note = accuracy_interval(acc, level=0.9)
    assert (low, high) == pytest.approx((special.expit(logits.mean() - half), special.expit(logits.mean() + half)))
    assert note == "" and accuracy_interval(acc)[1] > high
