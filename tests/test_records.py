"""Records that never lie: the code a run imported, its thread count, its machine; a run that
never deletes what it did not write; a diverged model recorded as failed; long job names."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import ROOT, train
from test_collect import fake_run

from mnist_compare.collect.__main__ import collect
from mnist_compare.collect.report import code_versions
from mnist_compare.collect.runs import load_sweep
from mnist_compare.errors import UserError
from mnist_compare.run import outcome, progress, provenance
from mnist_compare.run.identity import MAX_NAME_BYTES, identity_config, job_dirname, run_id

QUICK = ["trainer.max_epochs=1", "data.n_pairs=200", "hydra/launcher=basic", "logger=null"]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def strict_json(path: Path) -> dict:
    """The file as a strict JSON reader sees it: bare NaN or Infinity refused."""
    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def user_env(tmp_path: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}


# ------------------------------------------------------------------ 1, 2: the code a run imported

@pytest.fixture
def on_path(tmp_path):
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] in ("edited_pkg", "ns_pkg")]:
        del sys.modules[name]
    for name in ("edited_pkg", "ns_pkg"):
        provenance.IMPORTED.pop(name, None)


def test_user_code_is_the_code_imported_and_an_edit_since_is_refused(on_path):
    package = on_path / "edited_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text("ACT = 'relu'\n")
    importlib.invalidate_caches()
    importlib.import_module("edited_pkg.nets")
    config = {"arch": {"pipe": {"_target_": "edited_pkg.nets.build"}}}
    imported = provenance.user_modules(config)["edited_pkg"]
    (package / "nets.py").write_text("ACT = 'tanh'\n")  # edited while the process runs the old code
    with pytest.raises(UserError, match=r"edited_pkg .* changed on disk after this process imported it"):
        provenance.user_modules(config)
    (package / "nets.py").write_text("ACT = 'relu'\n")
    assert provenance.user_modules(config)["edited_pkg"] == imported


def test_a_namespace_package_is_hashed(on_path):
    """A folder without __init__.py is a package too (a namespace package)."""
    package = on_path / "ns_pkg"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "nets.py").write_text("ACT = 'relu'\n")
    config = {"model": {"_target_": "ns_pkg.sub.nets.build"}}
    importlib.invalidate_caches()
    before = provenance.user_modules(config)
    assert list(before) == ["ns_pkg"]
    (package / "sub" / "nets.py").write_text("ACT = 'tanh'\n")
    assert provenance.user_modules(config) != before  # not imported yet: the disk is the code


def test_a_job_runs_the_code_its_sweep_was_launched_with():
    code = {"source_hash": "a" * 16, "user_modules": {"labpkg": "b" * 16}}
    provenance.same_code(code, code)
    provenance.same_code(code, None)  # not in a sweep
    with pytest.raises(UserError, match=r"labpkg b+ -> c+"):
        provenance.same_code({**code, "user_modules": {"labpkg": "c" * 16}}, code)
    with pytest.raises(UserError, match="the code changed after this sweep was launched"):
        provenance.same_code({**code, "source_hash": "d" * 16}, code)


# A user's pipe whose file is edited (ReLU -> Tanh) while seed 0 trains, as in the issue.
EDITED_WHILE_TRAINING = '''
import os
import pathlib

from mnist_compare.models import mlp


def pipe(sizes):
    if os.environ.get("PL_GLOBAL_SEED") == "0":  # seed 0's run is building its net
        here = pathlib.Path(__file__)
        here.write_text(here.read_text().replace("ACT = 'relu'", "ACT = 'tanh'"))
    return mlp(sizes)


ACT = 'relu'
'''


@pytest.mark.slow
def test_a_sweep_never_records_code_edited_after_its_process_imported_it(tmp_path, mnist_dir):
    package = tmp_path / "labpkg"  # a namespace package: no __init__.py
    package.mkdir()
    (package / "nets.py").write_text(EDITED_WHILE_TRAINING)
    original = provenance._hash_files([(package, package / "nets.py")])
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", "arch.pipe._target_=labpkg.nets.pipe", *QUICK, f"hydra.sweep.dir={sweep}"]
    done = train(*args, env=user_env(tmp_path))
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # after Hydra's own "Error executing job" (hydra/launcher=basic)
    assert last.startswith("error: labpkg") and "changed on disk after this process imported it" in last, done.stderr
    (first,) = sweep.glob("*seed=0*/metrics.json")
    assert json.loads(first.read_text())["code"]["user_modules"] == {"labpkg": original}  # the code it ran
    assert not list(sweep.glob("*seed=1*/metrics.json"))
    again = train(*args, env=user_env(tmp_path))  # a resume would train seed 1 with the edited code
    assert again.returncode == 2 and "finished runs made by other code" in again.stderr, again.stderr
    assert not list(sweep.glob("*seed=1*/metrics.json"))


# ------------------------------------------------------------------ 3: threads=null

@pytest.mark.slow
def test_threads_null_counts_the_threads_the_run_uses(tmp_path, mnist_dir):
    records = []
    for threads in ("1", "2"):
        out = tmp_path / f"omp{threads}"
        done = train("threads=null", "trainer=fast_dev_run", "logger=null", f"hydra.run.dir={out}",
                     env={"OMP_NUM_THREADS": threads})
        assert done.returncode == 0, done.stderr
        records.append(json.loads((out / "metrics.json").read_text()))
    assert [r["threads"] for r in records] == [1, 2] == [r["config"]["threads"] for r in records]
    assert records[0]["run_id"] != records[1]["run_id"]
    # threads=null at 2 threads is the run threads=2 is
    explicit = tmp_path / "explicit"
    assert train("threads=2", "trainer=fast_dev_run", "logger=null", f"hydra.run.dir={explicit}").returncode == 0
    assert json.loads((explicit / "metrics.json").read_text())["run_id"] == records[1]["run_id"]


@pytest.mark.parametrize("folder", [
    "table1/arch=conv,aux=0.5,seed=3,ws=true", "table1/arch=shallow,aux=0,seed=0,ws=false",
    "table1_bf16/arch=deep,aux=0.5,seed=2,trainer.precision=bf16-mixed,ws=false",
])
def test_published_runs_keep_their_run_id(folder):
    from hydra import compose, initialize_config_dir

    from mnist_compare.paths import CONF_DIR

    record = json.loads((ROOT / "docs" / "results" / folder / "metrics.json").read_text())
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=record["overrides"])
    assert run_id(identity_config(cfg)) == record["run_id"] == run_id(record["config"])


# ------------------------------------------------------------------ 4: never delete the user's files

@pytest.mark.slow
def test_a_run_refuses_a_folder_of_the_users_files_and_touches_nothing(tmp_path, mnist_dir):
    out = tmp_path / "mine"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "my_model.ckpt").write_bytes(b"weights")
    (out / "tb").mkdir()
    (out / "tb" / "events").write_text("mine")
    (out / "train.log").write_text("my log")
    before = snapshot(out)
    done = train("trainer=fast_dev_run", f"hydra.run.dir={out}")
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not empty" in lines[0] and "nothing was touched" in lines[0], done.stderr
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["checkpoints", "tb", "train.log"]


@pytest.mark.slow
def test_a_run_into_the_working_folder_is_refused(tmp_path, mnist_dir):
    (tmp_path / "notes.txt").write_text("mine")
    done = train("trainer=fast_dev_run", "hydra.run.dir=.", cwd=tmp_path)
    assert done.returncode == 2 and "is not empty" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_a_run_resumes_its_own_interrupted_attempt(tmp_path, mnist_dir):
    out = tmp_path / "run"
    args = ["trainer=fast_dev_run", f"hydra.run.dir={out}"]
    assert train(*args).returncode == 0
    (out / "metrics.json").unlink()  # as if killed before the end: .hydra/, tb/, train.log stay
    done = train(*args)
    assert done.returncode == 0, done.stderr
    assert (out / "metrics.json").exists()


# ------------------------------------------------------------------ 5: ws and aux are the model's

@pytest.mark.parametrize(("override", "says"), [
    ("model.aux_loss_weight=0.9", "model.aux_loss_weight=0.9 disagrees with aux=0"),
    ("model.weight_sharing=true", "model.weight_sharing=true disagrees with ws=false"),
])
@pytest.mark.slow
def test_model_settings_that_disagree_with_ws_or_aux_are_refused(tmp_path, override, says):
    out = tmp_path / "run"
    done = train("trainer=fast_dev_run", override, f"hydra.run.dir={out}")
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()


# ------------------------------------------------------------------ 7: long override lists

def test_long_override_lists_get_short_distinct_folder_names():
    long = [f"arch.pipe.sizes=[196,{','.join(['16'] * 90)},10]", "seed=1"]
    name = job_dirname(long)
    assert len(name.encode()) <= MAX_NAME_BYTES and name == job_dirname(list(reversed(long)))
    assert job_dirname([long[0], "seed=2"]) != name
    assert job_dirname(["aux=0.5", "seed=1"]) == "aux=0.5,seed=1"  # short names as ever


@pytest.mark.slow
def test_a_sweep_with_a_long_override_list_runs(tmp_path, mnist_dir):
    sweep = tmp_path / "sweep"
    sizes = f"arch.pipe.sizes=[196,{','.join(['16'] * 70)},10]"
    done = train("-m", "seed=0,1", sizes, "trainer=fast_dev_run", "hydra/launcher=basic", "logger=null",
                 f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    assert len(list(sweep.glob("*/metrics.json"))) == 2


def test_a_failure_never_points_to_a_failure_record_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)  # no launch announced: any failure record counts
    error = OSError(36, "File name too long")
    outcome.mark(error, "multirun", tmp_path, 2)
    message, status = outcome.report(error, [])
    assert status == 1 and "failure.json" not in message and "nothing was recorded" in message
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "failure.json").write_text("{}")
    error = RuntimeError("boom")
    outcome.mark(error, "multirun", tmp_path, 2)
    message, _ = outcome.report(error, [])
    assert f"see {tmp_path / 'job' / 'failure.json'}" in message


# ------------------------------------------------------------------ 9: a diverged model is a failed run

@pytest.mark.slow
def test_a_diverged_model_is_a_failed_run_with_valid_json(tmp_path, mnist_dir):
    out = tmp_path / "run"
    # one batch: the training loss, taken before the step, is finite; the test loss after it is not
    done = train("model.optimizer.lr=1e30", "trainer=fast_dev_run", "logger=null", f"hydra.run.dir={out}")
    assert done.returncode == 1, done.stderr
    assert "non-finite" in done.stderr and str(out / "failure.json") in done.stderr
    failure = strict_json(out / "failure.json")
    assert failure["status"] == "failed" and "NonFiniteRun: non-finite figures (test_loss" in failure["error"]
    assert not (out / "metrics.json").exists()


def test_the_collector_never_averages_a_record_with_non_finite_figures(tmp_path):
    root = tmp_path / "sweep"
    for seed in range(3):
        fake_run(root, "deep", False, 0.0, seed, 0.8)
    for seed, bad in ((3, "NaN"), (4, float("nan"))):
        job = fake_run(root, "deep", False, 0.0, seed, 0.47)
        record = json.loads((job / "metrics.json").read_text())
        record["test_loss"] = bad
        (job / "metrics.json").write_text(json.dumps(record))  # json writes a float NaN bare, as before
    loaded = load_sweep(root)
    assert sorted(loaded.runs["seed"]) == [0, 1, 2]
    failed = loaded.problems[loaded.problems["status"] == "failed"]
    assert len(failed) == 2 and all("non-finite test_loss" in d for d in failed["detail"])


# ------------------------------------------------------------------ 10, 11: the machine, the Code line

@pytest.mark.slow
def test_records_name_the_cpu_and_kernels_and_the_collector_flags_a_group_mixing_them(tmp_path, mnist_dir):
    import torch

    out = tmp_path / "run"
    assert train("trainer=fast_dev_run", "logger=null", f"hydra.run.dir={out}").returncode == 0
    record = strict_json(out / "metrics.json")
    assert isinstance(record["cpu"], str) and record["cpu"]
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    root = tmp_path / "sweep"
    for seed in range(4):
        job = fake_run(root, "deep", False, 0.0, seed, 0.8 + seed / 100)
        record = json.loads((job / "metrics.json").read_text())
        record.update(cpu="Some CPU", cpu_capability="AVX512" if seed < 2 else "AVX2")
        (job / "metrics.json").write_text(json.dumps(record))
    md = collect([root], tmp_path / "out")
    assert "**Groups mixing machines**" in md and "2 ATen kernel sets (AVX2: 2; AVX512: 2)" in md
    assert "CPU models" not in md


def test_the_code_line_names_the_users_modules(tmp_path):
    root = tmp_path / "sweep"
    for seed in range(2):
        job = fake_run(root, "deep", False, 0.0, seed, 0.8)
        record = json.loads((job / "metrics.json").read_text())
        record["code"]["user_modules"] = {"labpkg": ("1" if seed else "2") * 16}
        (job / "metrics.json").write_text(json.dumps(record))
    line = code_versions(load_sweep(root).runs)
    assert "2 code versions" in line and "labpkg 1111111111" in line and "labpkg 2222222222" in line
