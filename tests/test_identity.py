"""A run's identity (run/identity.py): what resume, folder names and the collector's duplicate
check rest on. Two spellings of one run must hash alike; two runs that can differ, never."""

from __future__ import annotations

import functools
import json
import math

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mnist_compare.paths import CONF_DIR
from mnist_compare.run.identity import (
    NEUTRAL_KEYS,
    canonical,
    finished_runs,
    flatten,
    group_id,
    identity_config,
    job_dirname,
    run_id,
    targets,
)


@functools.cache
def composed(*overrides: str):
    """The config of a run with `overrides` (composed once per spelling: the tests only read it)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", list(overrides), return_hydra_config=True)


def test_canonical_spells_integral_floats_as_ints_and_nothing_else():
    assert canonical(0.0) == 0 and type(canonical(0.0)) is int
    assert canonical(-3.0) == -3 and type(canonical(-3.0)) is int
    assert canonical(0.5) == 0.5 and type(canonical(0.5)) is float
    big = float(2**53)  # beyond it a float no longer names one integer
    assert type(canonical(big)) is float and type(canonical(float(2**53 - 1))) is int
    assert type(canonical(-big)) is float
    assert math.isnan(canonical(math.nan)) and canonical(math.inf) == math.inf
    assert canonical(True) is True and canonical("1.0") == "1.0" and canonical(None) is None
    assert canonical({1: [1.0, (2.0, 0.25)], "a": {"b": 3.0}}) == {"1": [1, [2, 0.25]], "a": {"b": 3}}
    assert type(canonical({"k": [1.0]})["k"][0]) is int


def test_flatten_and_targets_name_every_leaf_by_its_dotted_key():
    tree = {"a": {"b": 1, "c": {"d": [1, 2]}, "e": {}}, "f": None}
    assert flatten(tree) == {"a.b": 1, "a.c.d": [1, 2], "a.e": {}, "f": None}
    nested = {"_target_": "x.A", "opt": {"_target_": "y.B"}, "cbs": [{"_target_": "z.C"}, 3], "n": {"k": 1}}
    assert sorted(targets(nested)) == [("_target_", "x.A"), ("cbs.0._target_", "z.C"), ("opt._target_", "y.B")]
    assert targets([{"_target_": "t"}]) == [("0._target_", "t")] and targets(5) == []


def test_the_identity_is_the_resolved_config_without_hydra_and_the_neutral_settings():
    cfg = composed("aux=0.5", "data.data_dir=/somewhere", "checkpoint_after_s=5", "fuse_seeds=false")
    identity = identity_config(cfg)
    assert "hydra" not in identity
    flat = flatten(identity)
    assert not set(NEUTRAL_KEYS) & set(flat)
    assert "trainer.enable_progress_bar" in NEUTRAL_KEYS and "trainer.max_epochs" in flat
    assert identity["model"]["aux_loss_weight"] == 0.5  # interpolations resolved
    assert identity["data"]["seed"] == 0 and identity["threads"] == 1
    # the neutral settings, and spellings of one value, leave the run the same
    same = [composed(*o) for o in (["aux=0.5"], ["aux=0.50", "trainer.enable_progress_bar=true"],
                                  ["aux=0.5", "checkpoint_after_s=null", "fuse_seeds=true"])]
    assert {run_id(identity_config(c)) for c in same} == {run_id(identity)}
    assert run_id(identity_config(composed("aux=0"))) == run_id(identity_config(composed("aux=0.0")))
    assert json.loads(json.dumps(identity)) == identity  # stored as is in metrics.json


@pytest.mark.parametrize("change", ["aux=0.4", "threads=2", "ws=true", "seed=1", "data.n_pairs=999",
                                    "model.optimizer.lr=0.002", "trainer.max_epochs=49", "arch=deep"])
def test_anything_else_changes_the_run(change):
    assert run_id(identity_config(composed(change))) != run_id(identity_config(composed()))


def test_the_group_is_the_run_without_its_seeds():
    runs = [identity_config(composed(f"seed={s}")) for s in (0, 1, 7)]
    assert len({run_id(r) for r in runs}) == 3 and len({group_id(r) for r in runs}) == 1
    assert group_id(identity_config(composed("seed=1", "data.seed=4"))) == group_id(runs[0])
    assert group_id(identity_config(composed("aux=0.5"))) != group_id(runs[0])
    assert runs[1]["seed"] == 1  # hashing the group leaves the config itself alone
    assert len(run_id(runs[0])) == len(group_id(runs[0])) == 16


def test_folder_names_spell_each_value_once():
    assert job_dirname(["ws=True", "aux=0.0", "seed=3"]) == "aux=0,seed=3,ws=true"
    assert job_dirname([]) == "defaults" and job_dirname(["fuse_seeds=false"]) == "defaults"
    assert job_dirname(["~data.augment"]) == "data.augment=null"
    assert job_dirname(["~data.shuffle=false"]) == "data.shuffle=null"  # deleted, whatever value it names
    assert job_dirname(["model.scheduler=null"]) == "model.scheduler=null"
    assert job_dirname(["+x=[1.0,2.5]"]) == "x=[1,2.5]"
    assert job_dirname(["+x={a:1.0,b:false}"]) == "x={a:1,b:false}"
    assert job_dirname(["aux=0,0.5"]) == "defaults"  # a sweep override names no single job


def test_finished_runs_are_found_by_run_id_and_only_finished_ones(tmp_path):
    config = identity_config(composed())
    for name, record in {"a": {"status": "finished", "config": config, "run_id": "r1"},
                         "b": {"status": "finished", "config": config},  # old: identified by its config
                         "c": {"status": "failed", "config": config, "run_id": "r3"},
                         "d": {"status": "finished", "run_id": "r4"}}.items():  # no config
        (tmp_path / "sweep" / name).mkdir(parents=True)
        (tmp_path / "sweep" / name / "metrics.json").write_text(json.dumps(record))
    found = finished_runs(tmp_path / "sweep")
    assert sorted(found) == sorted(["r1", run_id(config)])
    assert found["r1"][0] == tmp_path / "sweep" / "a" and found[run_id(config)][1]["status"] == "finished"
    assert OmegaConf.create(found["r1"][1]["config"]) == OmegaConf.create(config)


def test_a_neutral_key_under_a_missing_or_plain_parent_is_left_alone():
    from mnist_compare.run.identity import _drop

    tree = {"data": {"data_dir": "/x", "seed": 0}, "trainer": 5}
    _drop(tree, "data.data_dir")
    _drop(tree, "trainer.enable_progress_bar")  # its parent is no mapping: nothing to drop
    _drop(tree, "logger.save_dir")  # no parent at all
    _drop(tree, "absent")
    assert tree == {"data": {"seed": 0}, "trainer": 5}


def test_the_first_folder_of_a_run_found_twice_is_kept(tmp_path):
    record = {"status": "finished", "config": {"seed": 0}, "run_id": "same"}
    for name in ("b", "a", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(record))
    assert finished_runs(tmp_path)["same"][0] == tmp_path / "a"  # in sorted order
    assert finished_runs(tmp_path / "nothing") == {}


def test_a_test_set_of_the_protocols_size_is_the_run_it_always_was():
    """data.test_pairs null, or equal to n_pairs, draws the protocol's test set: the same run (and the
    published run_ids stay); any other size, or another training size with a fixed test set, is not."""
    default = run_id(identity_config(composed()))
    assert "test_pairs" not in identity_config(composed())["data"]
    assert run_id(identity_config(composed("data.test_pairs=1000"))) == default
    assert run_id(identity_config(composed("data.test_pairs=null"))) == default
    assert run_id(identity_config(composed("data.test_pairs=500"))) != default
    fixed = identity_config(composed("data.n_pairs=2000", "data.test_pairs=1000"))
    assert fixed["data"]["test_pairs"] == 1000
    assert run_id(fixed) != run_id(identity_config(composed("data.n_pairs=2000")))


def test_threads_null_stands_in_the_identity_as_the_count_the_process_trains_with(monkeypatch):
    import torch

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    identity = identity_config(composed("threads=null"))
    assert identity["threads"] == torch.get_num_threads() and "THREADS" not in identity
    assert run_id(identity) == run_id(identity_config(composed(f"threads={torch.get_num_threads()}")))


def test_a_path_valued_setting_is_hashed_as_its_spelling():
    from pathlib import Path

    assert run_id({"data_dir": Path("/x/y")}) == run_id({"data_dir": "/x/y"})


def test_long_folder_names_are_cut_at_the_limit_with_a_hash_of_the_whole():
    import hashlib

    from mnist_compare.run.identity import MAX_NAME_BYTES, _fit_name

    exact = "a" * MAX_NAME_BYTES
    assert _fit_name(exact) == exact  # at the limit: kept as is
    longer = exact + "b"
    tag = "..." + hashlib.sha256(longer.encode()).hexdigest()[:16]
    assert _fit_name(longer) == "a" * (MAX_NAME_BYTES - len(tag)) + tag
    wide = "é" * MAX_NAME_BYTES  # two bytes a letter: the cut falls inside one, which is dropped
    cut = _fit_name(wide)
    assert len(cut.encode()) == MAX_NAME_BYTES - 1 and cut.endswith(hashlib.sha256(wide.encode()).hexdigest()[:16])


def test_threads_null_in_a_slurm_job_is_the_cores_slurm_gave_it(monkeypatch):
    import torch

    from mnist_compare.run.identity import process_threads

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert process_threads() == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "")  # not said: torch's own count
    assert process_threads() == torch.get_num_threads()
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")  # nor set
    assert process_threads() == torch.get_num_threads()
    monkeypatch.delenv("SLURM_JOB_ID")  # not in a job: a leftover variable is not read
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "37")
    assert process_threads() == torch.get_num_threads() != 37


def test_a_data_config_without_test_pairs_is_the_protocols_run():
    """A user's own data config may not have the key: the run is the one it always was."""
    from omegaconf import open_dict

    cfg = composed().copy()
    with open_dict(cfg):
        del cfg.data.test_pairs  # (Hydra's `~data.test_pairs` refuses to delete a null)
    without = identity_config(cfg)
    assert "test_pairs" not in without["data"] and run_id(without) == run_id(identity_config(composed()))
