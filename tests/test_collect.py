"""The collector on synthetic sweeps with known numbers, and on a real tiny sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, train
from scipy import stats

from mnist_compare.collect.__main__ import collect
from mnist_compare.collect.runs import load_sweep
from mnist_compare.collect.stats import holm, paired_effects, summarise_groups

T_975_4 = 2.7764451051977987  # Student t quantile, 4 degrees of freedom


def fake_run(root: Path, arch: str, ws: bool, aux: float, seed: int, acc: float, epochs: int = 3, **config) -> None:
    job = root / f"arch={arch},aux={aux},seed={seed},ws={ws}{''.join(f',{k}={v}' for k, v in config.items())}"
    (job / ".hydra").mkdir(parents=True)
    history = {"test_acc": [acc - 0.1, acc + 0.01, acc][:epochs], "train_loss": [0.9, 0.5, 0.3][:epochs]}
    (job / "metrics.json").write_text(json.dumps({
        "status": "finished", "arch": arch, "ws": ws, "aux": aux, "seed": seed, "n_params": 1000 + ws,
        "max_epochs": 3, "epochs": epochs, "test_acc": acc, "best_test_acc": acc + 0.01, "best_epoch": 2,
        "test_aux_acc": 0.9, "train_acc": 0.99, "train_time_s": 2.0, "history": history,
        "config": {"arch": {"name": arch}, "ws": ws, "aux": aux, "seed": seed, "data": {"seed": seed}, **config},
    }))


BASE = [0.80, 0.82, 0.81, 0.79, 0.83]
GAIN = [0.03, 0.01, 0.02, 0.04, 0.02]


@pytest.fixture
def sweep(tmp_path):
    for seed, (base, gain) in enumerate(zip(BASE, GAIN, strict=True)):
        fake_run(tmp_path, "deep", False, 0.0, seed, base)
        fake_run(tmp_path, "deep", True, 0.5, seed, base + gain)
    fake_run(tmp_path, "deep", True, 0.5, 7, 0.2, epochs=2)  # stopped after 2 of 3 epochs
    (tmp_path / "arch=deep,aux=0.5,seed=8,ws=True" / ".hydra").mkdir(parents=True)  # killed job
    failed = tmp_path / "arch=deep,aux=0.5,seed=9,ws=True"
    (failed / ".hydra").mkdir(parents=True)
    (failed / "failure.json").write_text(json.dumps({"status": "failed", "error": "FloatingPointError: nan"}))
    (tmp_path / "multirun.yaml").write_text("")
    return tmp_path


def test_groups_means_stds_and_intervals(sweep):
    loaded = load_sweep(sweep)
    summary = summarise_groups(loaded.runs, loaded.labels).set_index(["ws", "aux"])
    base = summary.loc[(False, 0.0)]
    assert base["n"] == 5
    assert base["test_acc_mean"] == pytest.approx(0.81)
    sd = math.sqrt(sum((a - 0.81) ** 2 for a in BASE) / 4)  # ddof = 1
    assert base["test_acc_std"] == pytest.approx(sd)
    assert base["ci95_low"] == pytest.approx(0.81 - T_975_4 * sd / math.sqrt(5))
    assert base["ci95_high"] == pytest.approx(0.81 + T_975_4 * sd / math.sqrt(5))
    assert base["best_epoch_on_test_mean"] == pytest.approx(0.82)
    assert summary.loc[(True, 0.5)]["test_acc_mean"] == pytest.approx(0.81 + np.mean(GAIN))  # bad runs left out


def test_failed_missing_and_incomplete_runs_are_listed_not_averaged(sweep):
    problems = load_sweep(sweep).problems.set_index("job")
    assert problems.loc["arch=deep,aux=0.5,seed=7,ws=True", "status"] == "incomplete"
    assert problems.loc["arch=deep,aux=0.5,seed=8,ws=True", "status"] == "missing"
    assert problems.loc["arch=deep,aux=0.5,seed=9,ws=True", "status"] == "failed"
    assert "FloatingPointError" in problems.loc["arch=deep,aux=0.5,seed=9,ws=True", "detail"]


def test_paired_effect_matches_a_hand_computed_t_test(sweep):
    loaded = load_sweep(sweep)
    (row,) = paired_effects(loaded.runs, loaded.labels).to_dict("records")
    diff = np.array(GAIN)
    sd = diff.std(ddof=1)
    t = diff.mean() / (sd / math.sqrt(5))
    assert row["effect"] == "WS + aux 0.5" and row["n_pairs"] == 5
    assert row["mean_diff"] == pytest.approx(0.024)
    assert row["ci95_low"] == pytest.approx(0.024 - T_975_4 * sd / math.sqrt(5))
    assert row["p_ttest"] == pytest.approx(2 * stats.t.sf(t, 4))
    assert row["p_ttest"] < 0.05 and row["holds"] == "yes: gain"


def test_holm_adjustment():
    assert holm(np.array([0.01, 0.04, 0.03])).tolist() == pytest.approx([0.03, 0.06, 0.06])


def test_other_swept_settings_form_their_own_groups(tmp_path):
    for seed in range(3):
        for lr in (0.001, 0.01):
            fake_run(tmp_path, "conv", True, 0.5, seed, 0.9 + lr + seed / 100, model={"lr": lr})
    loaded = load_sweep(tmp_path)
    assert "model.lr" in loaded.labels
    summary = summarise_groups(loaded.runs, loaded.labels)
    assert sorted(summary["test_acc_mean"].round(4)) == [0.911, 0.92]


def test_outputs_written_and_default_is_newest_sweep(sweep, tmp_path, monkeypatch):
    md = collect(sweep)
    for name in ("results.md", "results.csv", "results.tex", "paired_effects.csv", "runs.csv", "curves.png",
                 "table1.png"):
        assert (sweep / name).stat().st_size > 0, name
    assert "WS off, aux off" in md and "best_epoch_on_test" in md and "incomplete" in md
    monkeypatch.chdir(sweep.parent)
    done = run_cli("mnist_compare.collect", cwd=sweep.parent)
    assert done.returncode == 2 and "no sweep found under multirun/" in done.stderr


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
    assert (root / "curves.png").stat().st_size > 10_000
