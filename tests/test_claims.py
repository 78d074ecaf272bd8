"""The report's claims as verdicts, interactions, power, the learned-nothing flag and the collection's
HPARAMS view, on synthetic sweeps with known numbers (no training)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower
from test_collect import fake_run

from mnist_compare.collect import claims
from mnist_compare.collect.__main__ import collect, main
from mnist_compare.collect.runs import load_sweep
from mnist_compare.collect.stats import detectable, power, seeds_needed, wilcoxon_floor

# Cell means where every claim of the report holds (see claims.CLAIMS): WS < aux < both, both within
# 1 pp of aux, a negative interaction, the ConvNet 3 pp above the shallow MLP with no technique, ...
HOLDING = {
    "shallow": {"no technique": 0.820, "WS": 0.830, "aux": 0.840, "WS + aux": 0.845},
    "deep": {"no technique": 0.810, "WS": 0.840, "aux": 0.890, "WS + aux": 0.898},
    "conv": {"no technique": 0.850, "WS": 0.870, "aux": 0.900, "WS + aux": 0.905},
}
SEED_SHIFT = [0.004, -0.003, 0.001, -0.002, 0.0, 0.003, -0.001, 0.002, -0.004, 0.0005]  # shared by a seed's cells


def noise(arch: str, cell: str, seed: int, scale: float) -> float:
    """Small, fixed, cell-specific noise so that differences have variance."""
    return scale * math.sin(7.0 * seed + 5.0 * claims.ARCHS.index(arch) + 13.0 * list(claims.CELLS).index(cell))


def protocol_sweep(root: Path, means=HOLDING, seeds=range(10), scale: float = 0.001, digits: float = 0.95,
                   skip: tuple[str, str] | None = None) -> Path:
    for arch, cells in means.items():
        for cell, mean in cells.items():
            if (arch, cell) == skip:
                continue
            ws, aux = claims.CELLS[cell]
            for seed in seeds:
                acc = round(mean + SEED_SHIFT[seed % 10] + noise(arch, cell, seed, scale), 6)
                job = fake_run(root, arch, ws, aux, seed, acc)
                record = json.loads((job / "metrics.json").read_text())
                record["test_aux_acc"] = digits + noise(arch, cell, seed, 0.005) if aux else 0.1
                (job / "metrics.json").write_text(json.dumps(record))
    return root


def verdicts(root: Path) -> dict[str, str]:
    table, why = claims.evaluate(load_sweep(root))
    assert not why
    return dict(zip(table["claim"], table["claim_verdict"], strict=True))


def test_every_claim_holds_where_the_numbers_say_so(tmp_path):
    assert verdicts(protocol_sweep(tmp_path)) == {c.key: "holds" for c in claims.CLAIMS}


def test_claims_are_contradicted_where_the_numbers_go_the_other_way(tmp_path):
    means = json.loads(json.dumps(HOLDING))
    means["shallow"]["WS"] = 0.800  # WS now hurts the shallow MLP, and WS + aux is more than the sum
    means["conv"]["WS + aux"] = 0.880  # the ConvNet's pipes: both now clearly below aux alone
    got = verdicts(protocol_sweep(tmp_path, means))
    assert got["ws_improves"] == got["not_additive"] == got["aux_close_to_both"] == "contradicted"
    assert got["both_best"] == "contradicted" and got["aux_improves"] == "holds"
    table, _ = claims.evaluate(load_sweep(tmp_path))
    row = table.set_index("comparison").loc["shallow: WS - no technique"]
    assert row["verdict"] == "contradicted" and row["estimate"] < 0 and row["p_holm"] < 0.05


def test_noisy_few_seeds_are_not_shown_with_power_from_statsmodels(tmp_path):
    protocol_sweep(tmp_path, seeds=range(3), scale=0.03, digits=0.9)
    table, _ = claims.evaluate(load_sweep(tmp_path))
    assert set(table["claim_verdict"]) == {"not shown"}
    m = len(table)
    row = table.set_index("comparison").loc["deep: WS - no technique"]
    runs = load_sweep(tmp_path).runs
    acc = {(r["ws"], r["aux"], r["seed"]): r["test_acc"] for r in runs[runs["arch"] == "deep"].to_dict("records")}
    diff = np.array([acc[(True, 0.0, s)] - acc[(False, 0.0, s)] for s in range(3)])
    sd = diff.std(ddof=1)  # statsmodels' TTestPower gives nan at 3 seeds and this level: see stats.power
    assert power(row["detectable_effect"] / sd, 3, 0.05 / m) == pytest.approx(0.8, abs=1e-6)
    assert power(abs(diff.mean()) / sd, row["seeds_needed"], 0.05 / m) >= 0.8
    assert power(abs(diff.mean()) / sd, row["seeds_needed"] - 1, 0.05 / m) < 0.8
    assert row["p"] == pytest.approx(stats.ttest_1samp(diff, 0).pvalue)
    held = table[table["verdict"] != "not shown"]
    assert held["detectable_effect"].isna().all()


def test_a_sweep_without_the_cells_or_seeds_says_so(tmp_path):
    protocol_sweep(tmp_path / "missing", skip=("conv", "WS"))
    md = collect(tmp_path / "missing")
    assert "missing cells: conv WS on, aux off (the report" in md
    text = (tmp_path / "missing" / "conclusions.md").read_text()
    assert "No conclusions: the report's cells are not all here" in text
    protocol_sweep(tmp_path / "two", seeds=range(2))
    collect(tmp_path / "two")
    assert "only 2 seed(s) common to all twelve cells: at least 3 needed" in (
        tmp_path / "two" / "conclusions.md").read_text()


def test_conclusions_are_written_and_hold_no_nan(tmp_path):
    protocol_sweep(tmp_path)
    md = collect(tmp_path)
    assert "Of the report's 11 claims, tested seed-paired: 11 holds, 0 not shown, 0 contradicted" in md
    text = (tmp_path / "conclusions.md").read_text()
    assert "nan" not in text and "Family: 37 comparisons on 10 seeds." in text
    csv = pd.read_csv(tmp_path / "conclusions.csv")
    assert len(csv) == 37 and set(csv["verdict"]) == {"holds"}


def test_a_run_that_learned_nothing_is_flagged_and_counted(tmp_path):
    protocol_sweep(tmp_path)
    job = tmp_path / "arch=deep,aux=0.0,seed=3,ws=False"
    record = json.loads((job / "metrics.json").read_text())
    record["history"] = {"test_acc": [0.526] * 3, "train_acc": [0.55, 0.56, 0.55], "test_loss": [0.69] * 3,
                         "train_loss": [0.69] * 3}
    record["test_acc"] = 0.526
    (job / "metrics.json").write_text(json.dumps(record))
    md = collect(tmp_path)
    runs = pd.read_csv(tmp_path / "runs.csv")
    flagged = runs[runs["learned_nothing"]]
    assert flagged["job"].tolist() == [job.name]
    assert flagged["learned_nothing_why"].iloc[0] == "one class predicted throughout: accuracy 0.5260 at every epoch"
    assert "1 of 10 runs learned nothing (seed 3: one class predicted throughout" in md
    table = pd.read_csv(tmp_path / "conclusions.csv").set_index("comparison")
    assert table.loc["deep: WS - no technique", "not_learned"] == 1
    assert table.loc["conv: WS - no technique", "not_learned"] == 0
    assert "includes 1 run that learned nothing" in (tmp_path / "paired_effects.csv").read_text()


def test_chance_through_training_is_flagged_and_a_learning_run_is_not(tmp_path):
    for seed in range(3):
        job = fake_run(tmp_path, "deep", False, 1.0, seed, 0.49 + seed / 100)
        record = json.loads((job / "metrics.json").read_text())
        record["history"] = {"test_acc": [0.5, 0.52, 0.49 + seed / 100], "train_acc": [0.51, 0.5, 0.53]}
        (job / "metrics.json").write_text(json.dumps(record))
        fake_run(tmp_path, "deep", False, 0.0, seed, 0.8)
    runs = load_sweep(tmp_path).runs.set_index(["aux", "seed"])
    assert runs.loc[(1.0, 2), "learned_nothing_why"] == "accuracy at chance through training (at most 0.5300)"
    assert not runs.loc[(0.0, 2), "learned_nothing"]


def test_digit_accuracy_is_left_out_where_no_aux_loss_trained_it(tmp_path):
    for seed in range(3):
        fake_run(tmp_path, "deep", False, 0.0, seed, 0.8 + seed / 100)
        fake_run(tmp_path, "deep", False, 0.5, seed, 0.85 + seed / 100)
    md = re.sub(" +", " ", collect(tmp_path))
    assert "| deep | false | 0 | 3 | 0.8100 | 0.0100 | [0.7840, 0.8337] | 0.8200 ± 0.0100 | — |" in md
    assert "| deep | false | 0.5 | 3 | 0.8600 | 0.0100 | [0.8335, 0.8833] | 0.8700 ± 0.0100 | 0.9000 |" in md


def _dropout_folders(tmp_path: Path, arch_file: bool) -> tuple[Path, Path, list[float], list[float]]:
    """A baseline (deep, WS on, aux 0 and 0.5, seeds 0-2) and a dropout variant: a new arch file
    (deep_drop) or the same arch with `arch.pipe.dropout` set."""
    base, variant = tmp_path / "base", tmp_path / "drop"
    gain_base, gain_var = [0.05, 0.06, 0.04], [0.02, 0.07, 0.01]
    for seed in range(3):
        fake_run(base, "deep", True, 0.0, seed, 0.80 + seed / 100)
        fake_run(base, "deep", True, 0.5, seed, 0.80 + seed / 100 + gain_base[seed])
        arch = "deep_drop" if arch_file else "deep"
        fake_run(variant, arch, True, 0.0, seed, 0.81 + seed / 200, **{"arch.pipe.dropout": 0.3})
        fake_run(variant, arch, True, 0.5, seed, 0.81 + seed / 200 + gain_var[seed], **{"arch.pipe.dropout": 0.3})
    return base, variant, gain_base, gain_var


def test_a_variant_changes_the_aux_gain_by_an_interaction_with_its_test(tmp_path):
    base, variant, gain_base, gain_var = _dropout_folders(tmp_path, arch_file=False)
    out = tmp_path / "out"
    assert main([str(base), str(variant), "--out", str(out)]) == 0
    table = pd.read_csv(out / "interactions.csv")
    (row,) = table[table["interaction"] == "variant x technique"].to_dict("records")
    diff = np.array(gain_var) - np.array(gain_base)
    assert row["effect"] == "gain of aux 0.5" and row["n_pairs"] == 3
    assert row["mean_diff"] == pytest.approx(diff.mean())
    assert row["p_ttest"] == pytest.approx(stats.ttest_1samp(diff, 0).pvalue)
    assert row["settings"] == "arch.pipe.dropout: (unset) -> 0.3"  # once, not also model.pipe.dropout
    assert row["detectable_effect"] == pytest.approx(
        TTestPower().solve_power(nobs=3, alpha=0.05 / len(table), power=0.8) * diff.std(ddof=1), rel=1e-5)
    md = (out / "results.md").read_text()
    assert "— (n = 3: cannot go below 0.25)" in md  # no Wilcoxon p where 3 pairs cannot reach 0.05
    assert "model.pipe.dropout" not in md
    runs = pd.read_csv(out / "runs.csv")  # a numeric setting: numbers, empty where unset, never a word
    assert runs["arch.pipe.dropout"].dtype == float and runs["arch.pipe.dropout"].isna().sum() == 6
    dropout = pd.read_csv(out / "results.csv")["arch.pipe.dropout"]
    assert dropout.dtype == float and dropout.isna().sum() == 2 and (dropout.dropna() == 0.3).all()
    dropout = pd.read_csv(out / "paired_effects.csv")["arch.pipe.dropout"]
    assert dropout.dtype == float and dropout.isna().sum() == 1


def test_a_variant_arch_file_pairs_with_its_base_by_pair_or_by_smallest_difference(tmp_path):
    base, variant, gain_base, gain_var = _dropout_folders(tmp_path, arch_file=True)
    for extra in ([], ["--pair", "deep_drop=deep"]):
        out = tmp_path / f"out{len(extra)}"
        assert main([str(base), str(variant), "--out", str(out), *extra]) == 0
        effects = pd.read_csv(out / "variant_effects.csv")
        assert len(effects) == 2
        said = "arch: deep -> deep_drop" + (" (paired by the smallest config difference" if not extra else "; ")
        assert effects["settings"].str.startswith(said).all()
        assert effects["settings"].str.endswith("arch.pipe.dropout: (unset) -> 0.3").all()
        (row,) = pd.read_csv(out / "interactions.csv").query("interaction == 'variant x technique'").to_dict("records")
        assert row["mean_diff"] == pytest.approx(np.mean(np.array(gain_var) - np.array(gain_base)))


@pytest.mark.parametrize("pair, message", [
    ("deep_drop", "--pair deep_drop: write VARIANT_ARCH=BASELINE_ARCH"),
    ("dep_drop=deep", "--pair dep_drop=deep: no later folder has a run with arch=dep_drop (they have: deep_drop)"),
    ("deep_drop=shallow", "the baseline folder"),
])
def test_a_bad_pair_is_a_one_line_error(tmp_path, capsys, pair, message):
    base, variant, _, _ = _dropout_folders(tmp_path, arch_file=True)
    assert main([str(base), str(variant), "--out", str(tmp_path / "o"), "--pair", pair]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_ws_x_aux_interaction_per_architecture(tmp_path):
    protocol_sweep(tmp_path)
    collect(tmp_path)
    table = pd.read_csv(tmp_path / "interactions.csv").set_index("context")
    runs = load_sweep(tmp_path).runs
    for arch in HOLDING:
        acc = {(r["ws"], r["aux"], r["seed"]): r["test_acc"] for r in runs[runs["arch"] == arch].to_dict("records")}
        diff = [acc[(True, 0.5, s)] - acc[(False, 0.5, s)] - acc[(True, 0.0, s)] + acc[(False, 0.0, s)]
                for s in range(10)]
        assert table.loc[arch, "mean_diff"] == pytest.approx(np.mean(diff))
        assert table.loc[arch, "effect"] == "WS x aux 0.5" and table.loc[arch, "mean_diff"] < 0


@pytest.mark.parametrize("n, alpha, alternative", [(10, 0.05 / 37, "two-sided"), (10, 0.05, "two-sided"),
                                                    (5, 0.01, "larger"), (20, 0.05 / 37, "two-sided")])
def test_power_figures_are_statsmodels_where_it_gives_them(n, alpha, alternative):
    expected = TTestPower().solve_power(nobs=n, alpha=alpha, power=0.8, alternative=alternative)
    assert detectable(0.02, n, alpha, alternative) == pytest.approx(0.02 * expected, rel=1e-5)
    needed = TTestPower().solve_power(effect_size=0.7, alpha=alpha, power=0.8, alternative=alternative)
    assert seeds_needed(0.014, 0.02, alpha, alternative) == math.ceil(needed)
    assert power(0.7, 10, alpha, alternative) == pytest.approx(
        TTestPower().power(0.7, 10, alpha, alternative=alternative), abs=1e-7)


def test_three_seeds_at_a_small_level_get_a_power_figure_where_statsmodels_gives_none():
    wrong = TTestPower().solve_power(nobs=3, alpha=0.05 / 37, power=0.8)  # its power there: nan, then 0.12
    assert TTestPower().power(wrong, 3, 0.05 / 37) < 0.2
    assert power(detectable(1.0, 3, 0.05 / 37), 3, 0.05 / 37) == pytest.approx(0.8, abs=1e-6)
    assert detectable(1.0, 3, 0.05 / 37) == pytest.approx(19.92, abs=0.01)


def test_wilcoxon_floor_is_scipys_smallest_p():
    assert wilcoxon_floor(3) == pytest.approx(0.25) and wilcoxon_floor(5) == pytest.approx(0.0625)
    assert wilcoxon_floor(6) < 0.05


def test_robustness_sets_verdicts_side_by_side(tmp_path):
    first, second = protocol_sweep(tmp_path / "a", seeds=range(5)), tmp_path / "b"
    means = json.loads(json.dumps(HOLDING))
    means["shallow"]["WS"] = 0.800
    protocol_sweep(second, means, seeds=range(5, 10))
    out = tmp_path / "out"
    assert main(["robustness", f"first={first}", f"second={second}", f"pooled={first}+{second}", "--out",
                 str(out)]) == 0
    long = pd.read_csv(out / "robustness.csv")
    ws = long[long["claim"] == "ws_improves"].drop_duplicates("collection").set_index("collection")["claim_verdict"]
    assert ws.to_dict() == {"first": "holds", "second": "contradicted", "pooled": "not shown"}
    assert set(long.loc[long["collection"] == "pooled", "n_seeds"]) == {10}
    md = (out / "robustness.md").read_text()
    assert "| Weight sharing alone improves each architecture | **holds** (3 of 3 hold) | **contradicted** (2 of 3 " \
        "hold) | **not shown** (2 of 3 hold) |" in re.sub(" +", " ", md)
    assert "- **Comparisons contradicted in some collection**:\n  - Weight sharing alone improves each architecture " \
        "(`ws_improves`): shallow: WS - no technique" in md
    assert main(["robustness", f"few={tmp_path / 'a'}/arch=conv,aux=0.0,seed=0,ws=False", "--out", str(out)]) == 2


def _experiment_columns(folder: Path) -> tuple[list[str], list[dict]]:
    """The experiment summary's columns and every session's hparams, read back from the event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    columns, sessions = [], []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("experiment"):
                    columns.append([h.name for h in data.experiment.hparam_infos])
                if data.HasField("session_start_info"):
                    sessions.append({k: v.WhichOneof("kind") for k, v in data.session_start_info.hparams.items()})
    assert len(columns) == 1, columns  # one experiment summary for the collection
    return columns[0], sessions


def test_the_collection_has_one_hparams_experiment_of_what_differs(tmp_path):
    base, variant, _, _ = _dropout_folders(tmp_path, arch_file=False)
    out = tmp_path / "out"
    collect([base, variant], out)
    columns, sessions = _experiment_columns(out / "tensorboard")
    assert columns == ["arch", "ws", "aux", "arch.pipe.dropout"]  # the variant's key, no constants
    assert len(sessions) == 12
    assert sum("arch.pipe.dropout" in s for s in sessions) == 6  # unset: left out, never a string
    assert {s.get("arch.pipe.dropout") for s in sessions} == {None, "number_value"}
