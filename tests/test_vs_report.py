"""vs_report: only groups with every setting of the protocol are a reproduction; every other setting
that differs (precision, weight decay, clipping, ...) is listed at the top of vs_report.md."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from mnist_compare.collect.__main__ import collect
from mnist_compare.collect.runs import load_sweep
from mnist_compare.collect.stats import summarise_groups
from mnist_compare.collect.vs_report import compare
from mnist_compare.paths import CONF_DIR
from mnist_compare.run.identity import group_id, identity_config, run_id

PARAMS = {("shallow", False): 208172, ("shallow", True): 104662, ("deep", False): 199942, ("deep", True): 100712}
ROOT = Path(__file__).resolve().parent.parent


def write_runs(root: Path, arch: str, ws: bool, aux: float, overrides: list[str], accs: list[float]) -> None:
    """One finished record per seed, its config composed from conf/ as a job with these overrides records it."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", [f"arch={arch}", f"ws={str(ws).lower()}", f"aux={aux}", *overrides])
    for seed, acc in enumerate(accs):
        cfg.seed = seed
        config = identity_config(cfg)
        folder = root / f"arch={arch},aux={aux},seed={seed},ws={ws}{''.join(',' + o for o in overrides)}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({
            "status": "finished", "arch": arch, "ws": ws, "aux": aux, "seed": seed, "n_params": PARAMS[arch, ws],
            "max_epochs": 50, "epochs": 50, "test_acc": acc, "best_test_acc": acc + 0.01, "best_epoch": 40,
            "train_time_s": 2.0, "selection": "last epoch", "delivered_epoch": 50, "config": config,
            "run_id": run_id(config), "group_id": group_id(config),
            "history": {"test_acc": [acc], "train_loss": [0.3]},
        }))


def test_a_bf16_study_beside_the_report_says_bf16_and_is_no_reproduction(tmp_path):
    for ws in (False, True):
        write_runs(tmp_path, "shallow", ws, 0.0, ["trainer.precision=bf16-mixed"], [0.82, 0.83, 0.81])
    collect(tmp_path)
    md = (tmp_path / "vs_report.md").read_text()
    top = md.split("| arch")[0]
    assert not md.startswith("# Our reproduction"), md[:200]
    assert md.startswith("# Our runs beside the report's Table 1: not a reproduction")
    assert "1. trainer.precision=bf16-mixed (protocol: 32-true): every group" in top
    assert top.count("\n1. ") == 1 and "\n2. " not in top  # nothing else departs
    table = pd.read_csv(tmp_path / "vs_report.csv")
    assert list(table["departures"]) == ["trainer.precision=bf16-mixed (protocol: 32-true)"] * 2


def test_every_setting_is_compared_not_only_the_reports_eleven(tmp_path):
    """Weight decay, gradient clipping and a dropout of the pipe were not among the keys checked."""
    write_runs(tmp_path / "a", "deep", True, 0.5, [], [0.90, 0.89, 0.91])
    write_runs(tmp_path / "b", "deep", False, 0.5,
               ["+model.optimizer.weight_decay=0.01", "+trainer.gradient_clip_val=1.0"], [0.88, 0.89, 0.87])
    write_runs(tmp_path / "c", "deep", False, 0.0, ["+arch.pipe.dropout=0.3"], [0.82, 0.81, 0.83])
    collect(tmp_path)
    md = (tmp_path / "vs_report.md").read_text()
    top = md.split("| arch")[0]
    assert md.startswith("# Our runs beside the report's Table 1: a reproduction only in the rows without a departure")
    assert "1. arch.pipe.dropout=0.3 (protocol: (unset)): deep WS off, aux off" in top
    assert "2. model.optimizer.weight_decay=0.01 (protocol: (unset)): deep WS off, aux 0.5" in top
    assert "3. trainer.gradient_clip_val=1 (protocol: (unset)): deep WS off, aux 0.5" in top
    assert "model.pipe.dropout" not in md  # the copy of arch.pipe (conf/model/compare.yaml) is not listed again
    rows = {(r["cell"]): r for r in pd.read_csv(tmp_path / "vs_report.csv").fillna("").to_dict("records")}
    assert rows["WS on, aux 0.5"]["departures"] == ""
    table = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if line.startswith("| ")]
    column = table[0].index("departures (above)")
    assert [(r[1], r[column]) for r in table[1:]] == [
        ("WS off, aux off", "1"), ("WS off, aux 0.5", "2, 3"), ("WS on, aux 0.5", "none")]


def test_a_protocol_run_departs_in_nothing():
    """The protocol's config is what a default run records: a default run departs in nothing, and a
    change anywhere in it is found."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["arch=conv", "ws=true", "aux=0.5", "seed=3"])
    from mnist_compare.collect.vs_report import departures, protocol_config
    from mnist_compare.run.identity import flat_config

    flat = flat_config(identity_config(cfg))
    protocol = protocol_config("conv", True, 0.5)
    assert departures(flat, protocol) == []
    assert departures({**flat, "data.test_pairs": 500}, protocol) == ["data.test_pairs=500 (protocol: 1000)"]
    assert departures({**flat, "threads": 2, "model.weight_sharing": False}, protocol) == [
        "model.weight_sharing=false (protocol: true)", "threads=2 (protocol: 1)"]
    assert departures({k: v for k, v in flat.items() if k != "trainer.precision"}, protocol) == [
        "trainer.precision=(unset) (protocol: 32-true)"]


def test_the_published_fp32_study_is_a_reproduction_and_the_bf16_one_says_bf16():
    tables = {}
    for folder in ("table1", "table1_bf16"):
        sweep = load_sweep(ROOT / "docs" / "results" / folder)
        tables[folder], _ = compare(summarise_groups(sweep.runs, sweep.labels), sweep.runs, sweep.labels)
    assert len(tables["table1"]) == 12 and "departures" not in tables["table1"]  # no column where none departs
    assert list(tables["table1_bf16"]["departures"]) == ["trainer.precision=bf16-mixed (protocol: 32-true)"] * 12
    published = (ROOT / "docs" / "results" / "table1_bf16" / "vs_report.md").read_text()
    assert "trainer.precision=bf16-mixed (protocol: 32-true): every group" in published  # republished
