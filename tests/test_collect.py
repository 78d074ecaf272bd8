"""The collector on synthetic sweeps with known numbers, and on a real tiny sweep."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, train
from scipy import special, stats
from statsmodels.stats.multitest import multipletests

from mnist_compare.collect import figures
from mnist_compare.collect.__main__ import collect, main
from mnist_compare.collect.runs import load_sweep, load_sweeps, newest_sweep
from mnist_compare.collect.stats import paired_effects, summarise_groups, variant_effects
from mnist_compare.errors import UserError
from mnist_compare.run.identity import canonical, group_id

T_975_4 = 2.7764451051977987  # Student t quantile, 4 degrees of freedom
PARAMS = {("shallow", False): 208172, ("shallow", True): 104662, ("deep", False): 199942, ("deep", True): 100712,
          ("conv", False): 136206, ("conv", True): 68472}


def protocol_config(arch: str, ws: bool, aux: float, seed: int) -> dict[str, Any]:
    """The resolved config of a run of the report's protocol, as the training side records it."""
    return {
        "arch": {"name": arch, "pipe": {"sizes": [196, 500, 10] if arch == "shallow" else [196, 300, 10]}},
        "ws": ws, "aux": aux, "seed": seed,
        "data": {"n_pairs": 1000, "seed": seed, "batch_size": 100, "shuffle": False, "normalize": False,
                 "val_pairs": 0, "augment": None},
        "model": {"weight_sharing": ws, "aux_loss_weight": aux, "scheduler": None, "label_smoothing": 0.0,
                  "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001}},
        "trainer": {"max_epochs": 50},
    }


def fake_run(root: Path, arch: str, ws: bool, aux: float, seed: int, acc: float, epochs: int = 3, *,
             selection: str = "last epoch", old: bool = False, code: str = "abc", job: str | None = None,
             **overrides: Any) -> Path:
    """A job folder with a metrics.json as the training side writes it; `overrides` are dotted config
    keys (`**{"model.optimizer.lr": 0.01}`); `old`: a record from before run_id, code and selection."""
    config = protocol_config(arch, ws, aux, seed)
    config["model"]["pipe"] = config["arch"]["pipe"]  # the interpolation ${arch.pipe}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    name = job or f"arch={arch},aux={aux},seed={seed},ws={ws}{''.join(f',{k}={v}' for k, v in overrides.items())}"
    (root / name / ".hydra").mkdir(parents=True)
    chosen = selection != "last epoch"
    record: dict[str, Any] = {
        "status": "finished", "arch": arch, "ws": ws, "aux": aux, "seed": seed,
        "n_params": PARAMS.get((arch, ws), 1000 + ws), "max_epochs": 3, "epochs": epochs,
        "test_acc": acc, "test_loss": 0.4, "test_aux_acc": 0.9, "test_rule_acc": 0.95, "train_acc": 0.99,
        "train_loss": 0.3, "train_time_s": 2.0, "config": config, "overrides": [],
        "run_id": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
        "group_id": group_id(canonical(config)),
        "selection": selection, "delivered_epoch": 2 if chosen else epochs,
        "code": {"version": "0.1.0", "commit": code * 3, "dirty": False, "source_hash": code * 4},
        "versions": {"torch": "2.14.1", "pytorch_lightning": "2.6.0", "hydra": "1.3.2"},
    }
    stage = "val" if chosen else "test"
    record["history"] = {f"{stage}_acc": [acc - 0.1, acc + 0.01, acc][:epochs],
                         f"{stage}_loss": [0.7, 0.5, 0.4][:epochs], "train_loss": [0.9, 0.5, 0.3][:epochs],
                         "train_acc": [0.7, 0.9, 0.99][:epochs]}
    if chosen:
        record["val_acc"] = acc + 0.005
    else:
        record["best_test_acc"], record["best_epoch"] = acc + 0.01, 2
    if old:
        for key in ("run_id", "group_id", "code", "versions", "selection", "delivered_epoch", "status"):
            record.pop(key)
    (root / name / "metrics.json").write_text(json.dumps(record))
    return root / name


BASE = [0.80, 0.82, 0.81, 0.79, 0.83]
GAIN = [0.03, 0.01, 0.02, 0.04, 0.02]


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "s1"
    for seed, (base, gain) in enumerate(zip(BASE, GAIN, strict=True)):
        fake_run(root, "deep", False, 0.0, seed, base)
        fake_run(root, "deep", True, 0.5, seed, base + gain)
    fake_run(root, "deep", True, 0.5, 7, 0.2, epochs=2)  # stopped after 2 of 3 epochs
    (root / "arch=deep,aux=0.5,seed=8,ws=True" / ".hydra").mkdir(parents=True)  # killed job
    for seed, status in ((9, "failed"), (10, "timeout")):
        failed = root / f"arch=deep,aux=0.5,seed={seed},ws=True"
        (failed / ".hydra").mkdir(parents=True)
        (failed / "failure.json").write_text(json.dumps({"status": status, "error": "FloatingPointError: nan"}))
    nan_run = fake_run(root, "deep", True, 0.5, 11, 0.5)
    record = json.loads((nan_run / "metrics.json").read_text())
    (nan_run / "metrics.json").write_text(json.dumps({**record, "test_acc": float("nan")}))
    (root / "multirun.yaml").write_text("")
    return root


def test_groups_means_stds_and_intervals(sweep):
    loaded = load_sweep(sweep)
    summary = summarise_groups(loaded.runs, loaded.labels).set_index(["ws", "aux"])
    base = summary.loc[(False, 0.0)]
    assert base["n"] == 5
    assert base["test_acc_mean"] == pytest.approx(0.81)
    assert base["test_acc_std"] == pytest.approx(math.sqrt(sum((a - 0.81) ** 2 for a in BASE) / 4))  # ddof = 1
    logits = special.logit(BASE)  # the interval: Student-t on the logit scale, back-transformed
    half = T_975_4 * logits.std(ddof=1) / math.sqrt(5)
    assert base["ci95_low"] == pytest.approx(special.expit(logits.mean() - half))
    assert base["ci95_high"] == pytest.approx(special.expit(logits.mean() + half))
    assert base["ci95_low"] == pytest.approx(0.81 - T_975_4 * np.std(BASE, ddof=1) / math.sqrt(5), abs=1e-3)
    assert base["best_epoch_on_test_mean"] == pytest.approx(0.82)
    assert base["delivered"] == "last-epoch test accuracy"
    assert summary.loc[(True, 0.5)]["test_acc_mean"] == pytest.approx(0.81 + np.mean(GAIN))  # bad runs left out


def test_failed_missing_incomplete_and_nan_runs_are_listed_not_averaged(sweep):
    problems = load_sweep(sweep).problems.set_index("job")
    assert problems.loc["arch=deep,aux=0.5,seed=7,ws=True", "status"] == "incomplete"
    assert problems.loc["arch=deep,aux=0.5,seed=8,ws=True", "status"] == "missing"
    assert problems.loc["arch=deep,aux=0.5,seed=9,ws=True", "status"] == "failed"
    assert problems.loc["arch=deep,aux=0.5,seed=10,ws=True", "status"] == "timeout"  # as written
    assert "FloatingPointError" in problems.loc["arch=deep,aux=0.5,seed=9,ws=True", "detail"]
    assert problems.loc["arch=deep,aux=0.5,seed=11,ws=True", "status"] == "invalid"  # test_acc NaN


def test_paired_effect_matches_a_hand_computed_t_test(sweep):
    loaded = load_sweep(sweep)
    effects, notes = paired_effects(loaded.runs, loaded.labels)
    (row,) = effects.to_dict("records")
    diff = np.array(GAIN)
    sd = diff.std(ddof=1)
    t = diff.mean() / (sd / math.sqrt(5))
    assert row["effect"] == "WS + aux 0.5" and row["n_pairs"] == 5 and not notes
    assert row["mean_diff"] == pytest.approx(0.024)
    assert row["ci95_low"] == pytest.approx(0.024 - T_975_4 * sd / math.sqrt(5))
    assert row["p_ttest"] == pytest.approx(2 * stats.t.sf(t, 4))
    assert row["p_holm"] == row["p_ttest"] and row["verdict"] == "gain (Holm p < 0.05)"


def _family(root: Path, odd: list[float]) -> dict[str, dict]:
    """Baseline, two clearly better cells, and a cell `odd` (per seed) in one Holm family."""
    for seed, base in enumerate(BASE):
        fake_run(root, "deep", False, 0.0, seed, base)
        fake_run(root, "deep", True, 0.0, seed, base + GAIN[seed])
        fake_run(root, "deep", True, 0.5, seed, base + 2 * GAIN[seed] + 0.01 * (seed % 2))
        fake_run(root, "deep", False, 0.5, seed, odd[seed])
    loaded = load_sweep(root)
    effects, _ = paired_effects(loaded.runs, loaded.labels)
    return {r["effect"]: r for r in effects.to_dict("records")}


def test_a_cell_identical_to_its_baseline_is_never_significant(tmp_path):
    rows = _family(tmp_path, BASE)
    same = rows["aux 0.5"]
    assert same["verdict"] == "no variance: every seed differs by +0.0000; no test, not significant"
    assert math.isnan(same["p_ttest"]) and math.isnan(same["p_holm"]) and math.isnan(same["ci95_low"])
    # the untested cell counts as p = 1 in the family: the others get Holm over three comparisons
    tested = [rows["WS"]["p_ttest"], rows["WS + aux 0.5"]["p_ttest"], 1.0]
    adjusted = multipletests(tested, method="holm")[1]
    assert rows["WS"]["p_holm"] == pytest.approx(adjusted[0])
    assert rows["WS + aux 0.5"]["p_holm"] == pytest.approx(adjusted[1])
    assert rows["WS"]["verdict"] == "gain (Holm p < 0.05)"


def test_a_constant_shift_has_no_test_not_p_zero(tmp_path):
    rows = _family(tmp_path, [b + 0.02 for b in BASE])  # 0.82 - 0.80 != 0.83 - 0.81 in floating point
    shift = rows["aux 0.5"]
    assert shift["verdict"] == "no variance: every seed differs by +0.0200; no test, not significant"
    assert math.isnan(shift["p_ttest"]) and math.isnan(shift["p_holm"])
    assert rows["WS + aux 0.5"]["verdict"] == "gain (Holm p < 0.05)"


def test_a_key_set_in_some_runs_only_splits_groups(tmp_path):
    for seed in range(3):
        fake_run(tmp_path, "conv", False, 0.0, seed, 0.80 + seed / 100, **{"model.optimizer._target_": "SGD"})
        fake_run(tmp_path, "conv", False, 0.0, seed, 0.85 + seed / 100,
                 **{"model.optimizer._target_": "SGD", "model.optimizer.momentum": 0.9})
    loaded = load_sweep(tmp_path)
    assert loaded.labels == ["arch", "ws", "aux", "model.optimizer.momentum"]
    summary = summarise_groups(loaded.runs, loaded.labels)
    assert list(summary["model.optimizer.momentum"]) == ["0.9", "(unset)"]
    assert list(summary["test_acc_mean"].round(4)) == [0.86, 0.81]
    assert list(summary["context"]) == ["arch=conv model.optimizer.momentum=0.9",
                                        "arch=conv model.optimizer.momentum=(unset)"]


def test_other_swept_settings_form_their_own_rows(tmp_path):
    for seed in range(3):
        for lr in (0.01, 0.001):
            fake_run(tmp_path, "conv", True, 0.5, seed, 0.9 + lr + seed / 100, **{"model.optimizer.lr": lr})
        fake_run(tmp_path, "conv", False, 0.0, seed, 0.9, **{"model.optimizer.lr": 0.01})
    loaded = load_sweep(tmp_path)
    assert loaded.labels == ["arch", "ws", "aux", "model.optimizer.lr"]  # not arch.pipe.sizes: arch fixes it
    summary = summarise_groups(loaded.runs, loaded.labels)
    assert list(summary["test_acc_mean"].round(4)) == [0.911, 0.9, 0.92]  # numeric order of lr
    md = collect(tmp_path)
    md = re.sub(" +", " ", md)
    assert "| arch=conv model.optimizer.lr=0.001 | — | 0.9110 ± 0.0100 |" in md  # key=value rows
    assert "| arch=conv model.optimizer.lr=0.01 | 0.9000 (no variance) | 0.9200 ± 0.0100 |" in md
    assert "arch=conv model.optimizer.lr=0.001: no baseline cell" in md
    assert "| conv | true | 0.5 | 0.001 | 3 | 0.9110 | 0.0100 |" in md  # as written, not re-parsed


def test_a_setting_that_differs_with_the_architecture_is_shown(tmp_path):
    for seed in range(2):
        fake_run(tmp_path, "shallow", False, 0.0, seed, 0.8, **{"model.optimizer.lr": 0.001})
        fake_run(tmp_path, "deep", False, 0.0, seed, 0.8, **{"model.optimizer.lr": 0.01})
        fake_run(tmp_path, "deep", False, 0.0, seed, 0.8, **{"model.optimizer.lr": 0.01, "arch.pipe.sizes": [196, 9]})
    loaded = load_sweep(tmp_path)  # not model.pipe.sizes: a copy of arch.pipe.sizes, which shows
    assert loaded.labels == ["arch", "ws", "aux", "arch.pipe.sizes", "model.optimizer.lr"]
    assert loaded.runs["context"].unique().tolist() == [
        "arch=shallow arch.pipe.sizes=[196, 500, 10] model.optimizer.lr=0.001",
        "arch=deep arch.pipe.sizes=[196, 300, 10] model.optimizer.lr=0.01",
        "arch=deep arch.pipe.sizes=[196, 9] model.optimizer.lr=0.01"]


def test_the_same_run_under_two_spellings_counts_once(tmp_path):
    for seed, acc in enumerate(BASE):
        fake_run(tmp_path, "deep", False, 0.0, seed, acc)
    fake_run(tmp_path, "deep", False, 0, 1, 0.82, job="arch=deep,aux=0,seed=1,ws=False")  # aux=0, not 0.0
    loaded = load_sweep(tmp_path)
    assert len(loaded.runs) == 5
    (dup,) = loaded.problems.to_dict("records")
    assert dup["status"] == "duplicate" and dup["job"] == "arch=deep,aux=0.0,seed=1,ws=False"
    assert "arch=deep,aux=0,seed=1,ws=False (kept)" in dup["detail"]  # the first job path
    assert summarise_groups(loaded.runs, loaded.labels)["n"].tolist() == [5]
    assert "counts once: the first in the order of the folders given, then of job paths" in collect(tmp_path)


def test_duplicates_across_folders_and_duplicate_records(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed, acc in enumerate(BASE):
        fake_run(a, "shallow", False, 0.0, seed, acc)
    fake_run(b, "shallow", False, 0.0, 0, 0.5)  # the same run again, another result: kept once, the first
    marked = b / "arch=shallow,aux=0.0,seed=1,ws=False"
    (marked / ".hydra").mkdir(parents=True)
    (marked / "duplicate.json").write_text(json.dumps({"status": "duplicate", "of": "a/arch=..seed=1"}))
    loaded = load_sweeps([a, b])
    assert loaded.runs["test_acc"].tolist() == BASE
    problems = loaded.problems.set_index("job")
    assert problems["status"].tolist() == ["duplicate", "duplicate"]
    assert "DIFFERENT" in problems.loc["arch=shallow,aux=0.0,seed=0,ws=False", "detail"]
    assert "a/arch=..seed=1" in problems.loc["arch=shallow,aux=0.0,seed=1,ws=False", "detail"]


def test_old_records_without_run_id_are_identified_by_config(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed, acc in enumerate(BASE[:3]):
        fake_run(a, "deep", False, 0.0, seed, acc, old=True)
        fake_run(b, "deep", False, 0.0, seed, acc, old=True)
    loaded = load_sweeps([a, b])
    assert len(loaded.runs) == 3 and set(loaded.runs["sweep"]) == {str(a)}
    assert (loaded.problems["status"] == "duplicate").sum() == 3
    assert set(loaded.runs["delivered"]) == {"last-epoch test accuracy"}  # no selection: the last epoch


def test_several_folders_pair_across_sweeps(tmp_path):
    base, variant, out = tmp_path / "base", tmp_path / "variant", tmp_path / "out"
    for seed, (acc, gain) in enumerate(zip(BASE, GAIN, strict=True)):
        fake_run(base, "deep", False, 0.0, seed, acc)
        fake_run(variant, "deep", True, 0.0, seed, acc + gain, code="def")
    assert main([str(base), str(variant), "--out", str(out)]) == 0
    runs = (out / "runs.csv").read_text().splitlines()
    assert runs[0].startswith("sweep,") and len(runs) == 11 and sum(str(variant) in r for r in runs) == 5
    (effect,) = pd.read_csv(out / "paired_effects.csv").to_dict("records")  # paired by seed across folders
    assert effect["effect"] == "WS" and effect["n_pairs"] == 5 and effect["mean_diff"] == pytest.approx(0.024)
    md = (out / "results.md").read_text()
    assert "**The runs come from 2 code versions**" in md and ": 5 runs; " in md
    assert not (base / "results.md").exists()


@pytest.mark.parametrize("args, message", [
    (["{a}", "{b}"], "2 sweep folders: say where the tables go with --out DIR"),
    (["{a}", "{tmp}/nowhere", "--out", "{tmp}/o"], "nowhere is not a directory"),
    (["{a}", "{tmp}/empty", "--out", "{tmp}/o"], "empty holds no runs"),
    (["{a}", "{a}", "--out", "{tmp}/o"], "is the same folder as"),
])
def test_bad_folders_are_one_line_errors(tmp_path, capsys, args, message):
    a, b = tmp_path / "a", tmp_path / "b"
    fake_run(a, "deep", False, 0.0, 0, 0.8)
    fake_run(b, "deep", False, 0.0, 1, 0.8)
    (tmp_path / "empty").mkdir()
    assert main([x.format(a=a, b=b, tmp=tmp_path) for x in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_the_default_is_the_newest_sweep(tmp_path, monkeypatch):
    old, new = tmp_path / "multirun" / "2024-01-02" / "10-00-00", tmp_path / "multirun" / "2024-01-01" / "09-00-00"
    for root, when in ((old, 1_000_000), (new, 2_000_000)):  # the newer one sorts first by name
        fake_run(root, "deep", False, 0.0, 0, 0.8)
        (root / "multirun.yaml").write_text("")
        os.utime(root / "multirun.yaml", (when, when))
    monkeypatch.chdir(tmp_path)
    assert newest_sweep() == Path("multirun/2024-01-01/09-00-00")
    assert main([]) == 0 and (new / "results.md").exists() and not (old / "results.md").exists()
    with pytest.raises(UserError, match="no sweep found under elsewhere/"):
        newest_sweep(Path("elsewhere"))


def test_intervals_stay_within_accuracy_bounds(tmp_path):
    for seed, acc in enumerate([0.999, 0.990, 0.998]):
        fake_run(tmp_path, "best", True, 0.5, seed, acc)
    for seed in range(2):
        fake_run(tmp_path, "best", False, 0.5, seed, 0.97 + seed / 100)
    for seed in range(3):
        fake_run(tmp_path, "best", True, 0.0, seed, 0.9)
    loaded = load_sweep(tmp_path)
    summary = summarise_groups(loaded.runs, loaded.labels).set_index(["ws", "aux"])
    near_one = summary.loc[(True, 0.5)]
    assert 0 < near_one["ci95_low"] < near_one["test_acc_mean"] < near_one["ci95_high"] < 1
    assert near_one["note"] == ""
    assert math.isnan(summary.loc[(False, 0.5), "ci95_low"])
    assert summary.loc[(False, 0.5), "note"] == "n = 2 < 3 seeds: no interval"
    assert math.isnan(summary.loc[(True, 0.0), "ci95_high"])
    assert summary.loc[(True, 0.0), "note"] == "no variance: every seed gives 0.9000; no interval"


def test_empty_paired_table_says_why(tmp_path):
    fake_run(tmp_path, "shallow", False, 0.0, 0, 0.8)  # baseline with one seed
    fake_run(tmp_path, "shallow", True, 0.0, 0, 0.82)
    for seed in range(3):
        fake_run(tmp_path, "deep", False, 0.0, seed, 0.8)
        fake_run(tmp_path, "deep", True, 0.0, seed + 5, 0.82)  # other seeds: nothing to pair
    loaded = load_sweep(tmp_path)
    effects, notes = paired_effects(loaded.runs, loaded.labels)
    assert effects.empty
    assert notes == ["shallow: the baseline (WS off, aux off) has only 1 seed: no paired test",
                     "deep, WS on, aux off: 0 seed(s) in common with the baseline (fewer than 2): no paired test"]


def test_validation_selected_runs_are_said_so(tmp_path):
    for seed, acc in enumerate(BASE):
        fake_run(tmp_path, "conv", True, 0.5, seed, acc, selection="checkpoint with min val/loss",
                 **{"callbacks.monitor": "val/loss", "data.val_pairs": 200})
        fake_run(tmp_path, "conv", True, 0.5, seed, acc + 0.01)
    md = collect(tmp_path)
    loaded = load_sweep(tmp_path)
    summary = summarise_groups(loaded.runs, loaded.labels).set_index("callbacks.monitor")
    assert summary.loc["val/loss", "delivered"] == "test accuracy of the checkpoint chosen on validation pairs"
    assert math.isnan(summary.loc["val/loss", "best_epoch_on_test_mean"])
    assert summary.loc["(unset)", "best_epoch_on_test_mean"] == pytest.approx(0.83)
    assert "differs by group: see `delivered`" in md and "final-epoch" not in md.lower() and "nan" not in md
    assert "vs_report.md" in md  # the protocol group is still compared with the report
    assert (tmp_path / "curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_report_comparison_written_from_protocol_cells(tmp_path):
    for seed in range(10):
        for arch in ("shallow", "conv"):
            fake_run(tmp_path, arch, False, 0.0, seed, 0.82 + (seed % 2) / 100)
        fake_run(tmp_path, "conv", True, 0.5, seed, 0.9, **{"trainer.max_epochs": 20})  # not the protocol
    collect(tmp_path)
    table = pd.read_csv(tmp_path / "vs_report.csv")
    assert table["arch"].tolist() == ["shallow", "conv"] and set(table["cell"]) == {"WS off, aux off"}
    row = table.iloc[0]
    assert (row["report_mean"], row["report_std"], row["n"], row["last_epoch_mean"]) == (0.8205, 0.0149, 10, 0.825)
    assert row["best_epoch_on_test_mean"] == pytest.approx(0.835)
    se = math.sqrt(0.0149**2 / 10 + np.std([0.82, 0.83] * 5, ddof=1) ** 2 / 10)
    assert row["diff_over_se"] == pytest.approx((0.825 - 0.8205) / se)
    md = (tmp_path / "vs_report.md").read_text()
    assert "EE-559 mini-project report 2019, Table 1" in md and "best epoch on test (report's method" in md

    only_other = tmp_path / "other"
    fake_run(only_other, "shallow", False, 0.0, 0, 0.8, **{"trainer.max_epochs": 2})
    assert "None: no group runs the report's protocol: shallow WS off, aux off: trainer.max_epochs=2 " \
           "(report: 50)" in collect(only_other)
    assert not (only_other / "vs_report.md").exists()


@pytest.mark.slow
def test_outputs_are_written_and_readable(sweep):
    md = collect(sweep)
    for name in ("results.md", "results.csv", "results.tex", "paired_effects.csv", "runs.csv", "curves.png",
                 "table1.png"):
        assert (sweep / name).stat().st_size > 0, name
    assert "WS off, aux off" in md and "best epoch on test (report's method, optimistic)" in md
    assert "| deep   | false |" in md and "incomplete" in md and "timeout" in md
    assert "Last-epoch test accuracy over seeds" in md and "Code: 0.1.0 commit abcabcabc source abcabcabca" in md
    assert "nan" not in md.replace("FloatingPointError: nan", "").replace("test_acc is nan", "")


@pytest.mark.slow
def test_real_tiny_sweep(tmp_path, mnist_dir):
    root = tmp_path / "multirun" / "tiny"
    done = train("-m", "arch=shallow", "ws=true,false", "aux=0,0.5", "seed=0,1", "trainer.max_epochs=2",
                 f"hydra.sweep.dir={root}")
    assert done.returncode == 0, done.stderr
    collected = run_cli("mnist_compare.collect", cwd=tmp_path)  # finds multirun/tiny by itself
    assert collected.returncode == 0, collected.stderr
    runs = (root / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 8
    assert "WS + aux 0.5" in (root / "paired_effects.csv").read_text()
    assert "no group runs the report's protocol" in (root / "results.md").read_text()
    assert (root / "curves.png").stat().st_size > 10_000


ODD_RECORDS = {  # how a finished record is spoiled -> what the collector must say
    "no ws": (lambda r: r.pop("ws"), "no ws"),
    "epochs null": (lambda r: r.update(epochs=None), "epochs is null, not a count of epochs"),
    "no test_acc": (lambda r: r.pop("test_acc"), "no test_acc"),
    "test_acc text": (lambda r: r.update(test_acc="0.8"), 'test_acc is "0.8", not an accuracy in [0, 1]'),
    "test_acc NaN": (lambda r: r.update(test_acc=float("nan")), "test_acc is NaN, not an accuracy in [0, 1]"),
    "test_acc > 1": (lambda r: r.update(test_acc=81.0), "test_acc is 81.0, not an accuracy in [0, 1]"),
    "no arch": (lambda r: r.pop("arch"), "no arch"),
    "ws text": (lambda r: r.update(ws="true"), 'ws is "true", not true or false'),
    "no aux": (lambda r: r.pop("aux"), "no aux"),
    "aux null": (lambda r: r.update(aux=None), "aux is null, not a finite number"),
    "no seed": (lambda r: r.pop("seed"), "no seed"),
    "seed float": (lambda r: r.update(seed=1.5), "seed is 1.5, not an integer"),
    "no config": (lambda r: r.pop("config"), "no config"),
    "config list": (lambda r: r.update(config=[1]), "config is [1], not the resolved config"),
    "n_params list": (lambda r: r.update(n_params=[1]), "n_params is [1], not a count of parameters"),
    "history text": (lambda r: r.update(history={"test_acc": "high"}), "history is"),
    "run_id list": (lambda r: r.update(run_id=["a"]), 'run_id is ["a"], not a string'),
}


def _spoil(job: Path, how) -> None:
    record = json.loads((job / "metrics.json").read_text())
    how(record)
    (job / "metrics.json").write_text(json.dumps(record))


@pytest.mark.parametrize("name", ODD_RECORDS)
def test_an_odd_record_is_listed_as_invalid_with_its_reason(tmp_path, name):
    how, reason = ODD_RECORDS[name]
    for seed, acc in enumerate(BASE[:3]):
        fake_run(tmp_path, "deep", False, 0.0, seed, acc)
    _spoil(fake_run(tmp_path, "deep", False, 0.0, 3, 0.2), how)
    loaded = load_sweep(tmp_path)
    assert loaded.runs["test_acc"].tolist() == BASE[:3]  # never averaged
    (problem,) = loaded.problems.to_dict("records")
    assert problem["status"] == "invalid" and problem["job"] == "arch=deep,aux=0.0,seed=3,ws=False"
    assert problem["detail"].startswith("metrics.json: ") and reason in problem["detail"]


def test_odd_records_together_are_runs_left_out_not_a_traceback(tmp_path):
    for seed, acc in enumerate(BASE[:3]):
        fake_run(tmp_path, "deep", False, 0.0, seed, acc)
    for seed, (how, _) in enumerate(ODD_RECORDS.values(), start=10):
        _spoil(fake_run(tmp_path, "deep", True, 0.5, seed, 0.9), how)
    md = re.sub(" +", " ", collect(tmp_path))
    assert f"## Runs left out ({len(ODD_RECORDS)})" in md
    assert md.count("| invalid |") == len(ODD_RECORDS) and "epochs is null, not a count of epochs" in md
    assert pd.read_csv(tmp_path / "results.csv")["n"].tolist() == [3]


def test_group_ids_come_from_the_record_or_the_identity_of_old_records(tmp_path):
    fake_run(tmp_path, "deep", False, 0.0, 0, 0.8)
    fake_run(tmp_path, "deep", False, 0, 1, 0.81, old=True, job="old1")  # aux=0, not 0.0: the same group
    fake_run(tmp_path, "deep", False, 0.0, 2, 0.82, old=True, job="old2")
    loaded = load_sweep(tmp_path)
    config = json.loads((tmp_path / "arch=deep,aux=0.0,seed=0,ws=False" / "metrics.json").read_text())["config"]
    assert set(loaded.runs["group_id"]) == {group_id(canonical(config))}
    assert summarise_groups(loaded.runs, loaded.labels)["n"].tolist() == [3]


VARIANT_GAIN = [0.01, -0.005, 0.02, 0.0, 0.015]


def _precision_folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An fp32 sweep, the same in bf16, and a variant module (an extra key) on fp32: seeds 0-4."""
    fp32, bf16, warm = tmp_path / "fp32", tmp_path / "bf16", tmp_path / "warmup"
    for seed, (acc, gain) in enumerate(zip(BASE, GAIN, strict=True)):
        for ws, aux, cell in ((False, 0.0, acc), (True, 0.5, acc + gain)):
            fake_run(fp32, "deep", ws, aux, seed, cell, **{"trainer.precision": "32-true"})
            fake_run(bf16, "deep", ws, aux, seed, cell - 0.01 - 0.001 * seed, **{"trainer.precision": "bf16-mixed"})
        fake_run(warm, "deep", True, 0.5, seed, acc + gain + VARIANT_GAIN[seed],
                 **{"trainer.precision": "32-true", "model._target_": "mylab.module.WarmupAux",
                    "model.warmup_epochs": 5})
    return fp32, bf16, warm


def test_variant_effects_pair_each_later_folder_with_the_first(tmp_path):
    fp32, bf16, warm = _precision_folders(tmp_path)
    loaded = load_sweeps([fp32, bf16, warm])
    table, notes = variant_effects(loaded.runs, [str(fp32), str(bf16), str(warm)])
    assert not notes
    rows = table.to_dict("records")
    assert [(r["variant"], r["ws"], r["aux"]) for r in rows] == [
        (str(bf16), False, 0.0), (str(bf16), True, 0.5), (str(warm), True, 0.5)]
    assert rows[0]["settings"] == rows[1]["settings"] == "trainer.precision: 32-true -> bf16-mixed"
    assert rows[2]["settings"] == ("model._target_: (unset) -> mylab.module.WarmupAux; "
                                   "model.warmup_epochs: (unset) -> 5")
    diffs = [np.array([-0.01 - 0.001 * s for s in range(5)])] * 2 + [np.array(VARIANT_GAIN)]
    for row, diff in zip(rows, diffs, strict=True):
        assert row["n_pairs"] == 5 and row["mean_diff"] == pytest.approx(diff.mean())
        half = T_975_4 * diff.std(ddof=1) / math.sqrt(5)
        assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
        assert row["p_ttest"] == pytest.approx(stats.ttest_1samp(diff, 0).pvalue)
        assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(diff).pvalue)
    holm = multipletests([r["p_ttest"] for r in rows], method="holm")[1]  # one family: these three
    assert [r["p_holm"] for r in rows] == pytest.approx(list(holm))
    assert rows[0]["verdict"] == "loss (Holm p < 0.05)" and rows[2]["verdict"] == "not significant at 5% (Holm)"


@pytest.mark.slow
def test_variant_effects_are_written_with_several_folders(tmp_path):
    fp32, bf16, warm = _precision_folders(tmp_path)
    out = tmp_path / "out"
    assert main([str(fp32), str(bf16), str(warm), "--out", str(out)]) == 0
    table = pd.read_csv(out / "variant_effects.csv")
    assert len(table) == 3 and table["settings"].str.contains(" -> ").all()
    md = re.sub(" +", " ", (out / "results.md").read_text())
    assert "## Variant effects: each later folder against the first" in md and f"Baseline: {fp32}." in md
    assert f"| deep | false | 0 | {bf16} | trainer.precision: 32-true -> bf16-mixed | 5 | -0.0120 |" in md
    assert "nan" not in md
    single = tmp_path / "single"
    fake_run(single, "deep", False, 0.0, 0, 0.8)
    assert "Variant effects" not in collect(single) and not (single / "variant_effects.csv").exists()


def test_the_closest_baseline_group_is_the_counterpart_and_a_tie_is_said(tmp_path):
    base, closer, tie = tmp_path / "base", tmp_path / "closer", tmp_path / "tie"
    for seed, acc in enumerate(BASE):
        for lr in (0.001, 0.01):
            fake_run(base, "conv", False, 0.0, seed, acc + lr, **{"model.optimizer.lr": lr})
        fake_run(closer, "conv", False, 0.0, seed, acc + 0.01 + GAIN[seed],
                 **{"model.optimizer.lr": 0.01, "trainer.precision": "bf16-mixed"})
        fake_run(tie, "conv", False, 0.0, seed, acc, **{"model.optimizer.lr": 0.1})
    loaded = load_sweeps([base, closer, tie])
    table, notes = variant_effects(loaded.runs, [str(base), str(closer), str(tie)])
    (row,) = table.to_dict("records")
    assert row["settings"] == "trainer.precision: (unset) -> bf16-mixed"  # not also lr 0.001 -> 0.01
    assert row["mean_diff"] == pytest.approx(np.mean(GAIN))
    (note,) = notes
    assert note.startswith(f"{tie}: arch=conv model.optimizer.lr=0.1 trainer.precision=(unset), WS off, aux off: "
                           "2 baseline groups differ from it in 1 setting(s) each")
    assert note.endswith("no single counterpart, not paired")


def test_nothing_to_pair_across_folders_is_said(tmp_path):
    base, other_seeds, other_cell, out = (tmp_path / n for n in ("base", "seeds", "cell", "out"))
    for seed, acc in enumerate(BASE):
        fake_run(base, "deep", False, 0.0, seed, acc)
        fake_run(other_seeds, "deep", False, 0.0, seed + 10, acc, **{"trainer.precision": "bf16-mixed"})
        fake_run(other_cell, "shallow", True, 0.5, seed, acc)
    assert main([str(base), str(other_seeds), str(other_cell), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert "Nothing to pair:" in md
    assert (f"- {other_seeds}: arch=deep trainer.precision=bf16-mixed, WS off, aux off: 0 seed(s) in common with "
            "its baseline counterpart (fewer than 2): no paired test (differs in trainer.precision: (unset) -> "
            "bf16-mixed)") in md
    assert f"- {other_cell}: arch=shallow" in md and "the baseline folder has no group with arch=shallow, ws=true, " \
        "aux=0.5" in md


def test_the_bars_start_low_enough_that_a_cell_below_chance_shows(tmp_path, monkeypatch):
    for seed in range(3):
        fake_run(tmp_path, "deep", False, 0.0, seed, 0.80 + seed / 100)
        fake_run(tmp_path, "deep", False, 1.0, seed, 0.49 + seed / 200)  # aux w = 1: collapses to chance
    loaded = load_sweep(tmp_path)
    summary = summarise_groups(loaded.runs, loaded.labels)
    drawn = []
    monkeypatch.setattr(figures.plt, "close", drawn.append)
    figures.bars_figure(tmp_path / "table1.png", summary, loaded.runs)
    (ax,) = drawn[0].axes
    low, high = ax.get_ylim()
    collapsed = summary.loc[summary["aux"] == 1.0].iloc[0]
    assert low == pytest.approx(collapsed["test_acc_mean"] - collapsed["test_acc_std"] - 0.05)
    tops = sorted(p.get_y() + p.get_height() for p in ax.patches)
    assert low < tops[0] == pytest.approx(0.495) and tops[-1] <= high  # every bar visible above the floor
    assert any(list(line.get_ydata()) == [0.5, 0.5] for line in ax.lines)  # chance as a line, labelled
    assert "chance (0.5)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_no_file_cites_outside_the_repository():
    here = Path(figures.__file__).parent
    for path in here.iterdir():
        if path.suffix in (".py", ".csv"):
            assert "shared/" not in path.read_text(), path
    assert (here.parents[1] / "docs" / "reference" / "original-study.md").exists()
