"""Effect curves along a swept numeric setting (collect/curves.py), on synthetic sweeps with known
numbers (no training): the gains per value, their family, the claims per value, the figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_claims import HOLDING, SEED_SHIFT, noise
from test_collect import fake_run

from mnist_compare.collect import claims, curves
from mnist_compare.collect.__main__ import collect
from mnist_compare.collect.runs import load_sweep
from mnist_compare.collect.stats import paired_effects

SIZES = (250, 1000, 4000)


def aux_gain(arch: str, n: int) -> float:
    """The deep MLP's aux gain fades with data: 5 pp, 2 pp, then none; the others keep theirs."""
    base = HOLDING[arch]["aux"] - HOLDING[arch]["no technique"]
    return {250: 0.05, 500: 0.03, 1000: 0.02, 4000: 0.0}[n] if arch == "deep" else base


def size_sweep(root, sizes=SIZES, seeds=range(6), fixed_test=True, skip=(), ws_gain=None, **extra):
    """The protocol's twelve cells at each training size, the test set fixed at 1000 pairs (left out
    of the identity at 1000, as the training side records it) or, `fixed_test=False`, as large as
    the training set (the protocol's rule); `skip`: (size, cell) left out."""
    for n in sizes:
        for arch, cells in HOLDING.items():
            for cell, mean in cells.items():
                ws, aux = claims.CELLS[cell]
                if (n, cell) in skip:
                    continue
                if aux:
                    mean = cells["no technique"] + aux_gain(arch, n) + (cells["WS + aux"] - cells["aux"]) * ws
                if ws_gain is not None and ws:
                    mean = mean - (cells["WS"] - cells["no technique"]) + ws_gain
                for seed in seeds:
                    acc = round(mean + SEED_SHIFT[seed] + noise(arch, cell, seed, 0.002), 6)
                    keys = {"data.n_pairs": n, **({"data.test_pairs": 1000} if n != 1000 and fixed_test else {})}
                    fake_run(root, arch, ws, aux, seed, acc, job=None if not extra else
                             f"{arch},{ws},{aux},{seed},{n},{','.join(map(str, extra.values()))}", **keys, **extra)
    return root


def test_a_size_study_is_a_curve_along_n_pairs_with_the_gains_it_was_built_with(tmp_path):
    sweep = load_sweep(size_sweep(tmp_path))
    assert "data.test_pairs" not in sweep.labels  # 1000 everywhere, spelt out or not
    assert curves.knobs(sweep.runs, sweep.labels) == ["data.n_pairs"]
    (found,) = curves.curves(sweep.runs, sweep.labels)
    table = found.table
    # per arch and size: WS, aux 0.5, WS + aux 0.5 against no technique, and the interaction
    assert len(table) == 3 * 4 * len(SIZES)
    assert set(table["technique"]) == {"WS", "aux 0.5", "WS + aux 0.5", "WS x aux 0.5 (interaction)"}
    deep_aux = table[(table["line"] == "deep") & (table["technique"] == "aux 0.5")].set_index("value")
    assert list(deep_aux.index) == list(SIZES)
    for n in SIZES:  # the seed-paired mean difference is the built-in gain plus the cells' fixed noise
        diffs = [noise("deep", "aux", s, 0.002) - noise("deep", "no technique", s, 0.002) for s in range(6)]
        assert deep_aux.loc[n, "mean_diff"] == pytest.approx(aux_gain("deep", n) + np.mean(diffs), abs=2e-6)
    assert (deep_aux.loc[[250, 1000], "p_holm"] < 0.05).all() and deep_aux.loc[4000, "p_holm"] >= 0.05
    assert math.isfinite(deep_aux.loc[4000, "detectable_effect"]) and math.isnan(deep_aux.loc[250, "detectable_effect"])
    # one Holm family over the whole table: the smallest raw p times the family's size
    assert table["p_holm"].min() == pytest.approx(min(1.0, table["p_ttest"].min() * len(table)))
    said = "\n".join(curves.findings(found))
    assert "**deep, aux 0.5**" in said and "it stops being shown above data.n_pairs = 1000" in said
    assert "**conv, aux 0.5**" in said and "gain shown at data.n_pairs = 250, 1000, 4000" in said
    interaction = next(line for line in said.splitlines() if "**deep, WS x aux 0.5 (interaction)**" in line)
    assert "loss shown at data.n_pairs = 250, 1000, 4000" in interaction and "gain" not in interaction
    assert "(no technique: conv - shallow (the second best): +2.9 pp at 250, +2.9 pp at 1000" in said


def test_the_claims_at_each_value_are_the_conclusions_of_that_block(tmp_path):
    sweep = load_sweep(size_sweep(tmp_path))
    (found,) = curves.curves(sweep.runs, sweep.labels)
    table, why_not = claims.evaluate(sweep)
    assert not why_not and set(table["block"]) == {f"data.n_pairs={n}" for n in SIZES}
    for n in SIZES:
        block = table[table["block"] == f"data.n_pairs={n}"].drop_duplicates("claim").set_index("claim")
        at = found.verdicts[found.verdicts["value"] == n].set_index("claim")
        assert at["verdict"].to_dict() == block["claim_verdict"].to_dict()
    aux = found.verdicts[found.verdicts["claim"] == "aux_improves"].set_index("value")["verdict"]
    assert aux[250] == "holds" and aux[4000] != "holds"  # the deep MLP's aux gain is gone at 4000


def test_an_aux_weight_sweep_is_a_curve_whose_numbers_are_the_paired_effects(tmp_path):
    """The aux-weight curve comes out of the same code: where the family is the same (WS on only),
    every figure equals the paired effects' (the published aux curve's numbers stay)."""
    for arch, gain in (("deep", 0.04), ("conv", 0.01)):
        for aux in (0.0, 0.25, 0.5, 1.0):
            for seed in range(5):
                acc = 0.8 + gain * aux * 4 * (aux < 1) - 0.3 * (aux == 1) + SEED_SHIFT[seed] \
                    + 0.003 * math.sin(seed * 3 + aux * 11)
                fake_run(tmp_path, arch, True, aux, seed, round(acc, 6))
    sweep = load_sweep(tmp_path)
    assert curves.knobs(sweep.runs, sweep.labels) == ["aux"]
    (found,) = curves.curves(sweep.runs, sweep.labels)
    effects, _ = paired_effects(sweep.runs, sweep.labels)
    effects["value"] = [float(e.split()[-1]) for e in effects["effect"]]
    merged = found.table.merge(effects, left_on=["line", "value"], right_on=["arch", "value"], suffixes=("", "_e"))
    assert len(merged) == len(found.table) == len(effects) == 2 * 3
    for key in ("mean_diff", "ci95_low", "ci95_high", "p_ttest", "p_wilcoxon", "p_holm"):
        assert np.array_equal(merged[key], merged[f"{key}_e"], equal_nan=True), key
    assert set(found.table["technique"]) == {"aux (WS on)"} and found.verdicts.empty
    assert not curves.log_scale([*found.levels["value"]])  # weight 0 is on the axis: a linear one


@pytest.mark.slow  # draws the figures: 10 s
def test_collect_writes_the_table_and_a_figure_per_architecture_and_none_without_a_knob(tmp_path):
    root = size_sweep(tmp_path / "sizes", sizes=(250, 500, 1000), seeds=range(3))
    collect(root)
    written = pd.read_csv(root / "curves.csv")
    assert written["value"].dtype.kind in "if" and written["mean_diff"].dtype.kind == "f"
    assert set(written["knob"]) == {"data.n_pairs"} and len(written) == 36
    for arch in ("shallow", "deep", "conv"):
        assert (root / f"curve_data.n_pairs_{arch}.png").stat().st_size > 10_000
    md = (root / "curves.md").read_text()
    assert "## Along data.n_pairs" in md and "### The report's claims at each value" in md
    assert "data.n_pairs=500" in md and "nan" not in md
    table1 = tmp_path / "table1"
    for arch, cells in HOLDING.items():
        for cell, mean in cells.items():
            for seed in range(3):
                fake_run(table1, arch, *claims.CELLS[cell], seed, mean + SEED_SHIFT[seed])
    collect(table1)
    assert not (table1 / "curves.md").exists() and not list(table1.glob("curve_*.png"))


@pytest.mark.parametrize(("values", "log"), [
    ([250, 500, 1000, 2000, 4000], True), ([100, 1000, 10000], True), ([0.1, 0.2, 0.3, 0.5, 1.0], False),
    ([0, 250, 500, 1000], False), ([250, 500], False), ([1e-4, 1e-3, 1e-2], True), ([1, 2, 3, 4], False),
])
def test_the_x_axis_is_logarithmic_where_the_values_grow_by_a_constant_factor(values, log):
    assert curves.log_scale(values) is log


def test_a_setting_with_two_values_or_a_word_is_no_knob(tmp_path):
    for lr in (0.001, 0.01):
        for seed in range(3):
            for opt in ("torch.optim.Adam", "torch.optim.SGD"):
                fake_run(tmp_path, "deep", False, 0.0, seed, 0.8 + SEED_SHIFT[seed] + (lr > 0.005) * 0.01,
                         job=f"lr={lr},opt={opt},seed={seed}",
                         **{"model.optimizer.lr": lr, "model.optimizer._target_": opt})
    sweep = load_sweep(tmp_path)
    assert curves.knobs(sweep.runs, sweep.labels) == []
    assert curves.curves(sweep.runs, sweep.labels) == []


def test_a_plain_size_sweep_has_one_knob_the_test_set_following_the_training_set(tmp_path):
    """Without data.test_pairs the test set grows with the training set: not a second knob, not a label."""
    sweep = load_sweep(size_sweep(tmp_path, seeds=range(3), fixed_test=False))
    assert "data.test_pairs" not in sweep.labels and set(sweep.runs["context"]) == {
        f"arch={a} data.n_pairs={n}" for a in ("shallow", "deep", "conv") for n in SIZES}
    (found,) = curves.curves(sweep.runs, sweep.labels)
    assert found.knob == "data.n_pairs" and set(found.table["line"]) == {"shallow", "deep", "conv"}


def test_other_settings_keep_their_own_claims_and_lines(tmp_path):
    """Sizes x two learning rates: at lr 0.01 WS hurts, at 0.001 it helps; the claims and the
    curves of one never stand for the other's."""
    for lr, gain in ((0.001, None), (0.01, -0.02)):
        size_sweep(tmp_path, seeds=range(4), ws_gain=gain, **{"model.optimizer.lr": lr})
    sweep = load_sweep(tmp_path)
    (found,) = curves.curves(sweep.runs, sweep.labels)
    ws = found.verdicts[found.verdicts["claim"] == "ws_improves"].set_index(["others", "value"])["verdict"].sort_index()
    assert set(ws[("model.optimizer.lr=0.001",)]) == {"holds"}
    assert set(ws[("model.optimizer.lr=0.01",)]) == {"contradicted"}
    said = "\n".join(curves.findings(found))
    assert "model.optimizer.lr=0.01: Claim *Weight sharing alone improves each architecture*: holds at no value; " \
           "contradicted at 250, 1000, 4000" in said
    assert set(found.table["line"]) == {f"arch={a} model.optimizer.lr={lr}" for a in ("shallow", "deep", "conv")
                                        for lr in ("0.001", "0.01")}
    md = curves.markdown([found], "t")
    assert "| other settings " in md and "nan" not in md


def test_one_baseline_per_curve_and_missing_cells_said(tmp_path):
    """WS off/aux off missing at one size: the curves keep it as their baseline and leave that size
    off, saying so; the claims at that size say why there are none. Missing at all but one size:
    WS on/aux off is the baseline."""
    sweep = load_sweep(size_sweep(tmp_path / "a", seeds=range(3), skip={(250, "no technique")}))
    (found,) = curves.curves(sweep.runs, sweep.labels)
    assert set(found.table["technique"]) == {"WS", "aux 0.5", "WS + aux 0.5", "WS x aux 0.5 (interaction)"}
    assert set(found.table["value"]) == {1000, 4000}
    assert "deep data.n_pairs=250: no WS off, aux off cell, the curve's baseline: not on the curve" in found.notes
    assert any(n.startswith("the report's claims at data.n_pairs=250: missing cells") for n in found.notes)
    assert sorted(set(found.verdicts["value"])) == [1000, 4000]
    skip = {(n, "no technique") for n in (250, 1000)}
    sweep = load_sweep(size_sweep(tmp_path / "b", seeds=range(3), skip=skip))
    (found,) = curves.curves(sweep.runs, sweep.labels)
    assert set(found.table["technique"]) == {"aux 0.5", "no WS + aux 0.5"}  # from WS on, aux off, at 3 sizes
    assert set(found.table["value"]) == {250, 1000, 4000}
    assert "deep, no WS: compared at one data.n_pairs only: no curve, left out of the family" in found.notes


def test_a_technique_run_at_one_value_is_no_curve_and_not_in_the_family(tmp_path):
    size_sweep(tmp_path, seeds=range(3))
    for seed in range(3):
        fake_run(tmp_path, "deep", False, 0.25, seed, 0.85 + SEED_SHIFT[seed], job=f"extra{seed}")
    sweep = load_sweep(tmp_path)
    found, by_aux = curves.curves(sweep.runs, sweep.labels)  # at 1000 pairs the deep MLP has 3 aux weights
    assert (found.knob, by_aux.knob) == ("data.n_pairs", "aux") and set(by_aux.table["line"]) == {
        "arch=deep data.n_pairs=1000"}
    assert "aux 0.25" not in set(found.table["technique"]) and len(found.table) == 36
    assert "deep, aux 0.25: compared at one data.n_pairs only: no curve, left out of the family" in found.notes


def test_a_gain_without_spread_is_said_without_a_power_figure():
    table = pd.DataFrame({"line": ["deep"] * 3, "technique": ["WS"] * 3, "value": [1.0, 2.0, 4.0],
                          "mean_diff": [0.01, 0.0, 0.0], "p_holm": [0.01, math.nan, math.nan],
                          "verdict": ["gain (Holm p < 0.05)"] + ["no variance: ...; no test, not significant"] * 2,
                          "detectable_effect": [math.nan] * 3})
    (line,) = curves.findings(curves.Curves("x", table, pd.DataFrame(), pd.DataFrame(), pd.DataFrame()))
    assert "not shown at 2, 4 (no spread to size a test by); it stops being shown above x = 1" in line
    assert "nan" not in line
