"""The progress line and the job label count and name this launch's jobs only (issue 24)."""

from __future__ import annotations

import os
import re

import pytest
from conftest import train
from omegaconf import OmegaConf

from mnist_compare.run import progress


def _result(folder, name: str, when: float) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("{}")
    os.utime(folder / name, (when, when))


def test_a_failure_of_an_earlier_launch_is_not_counted(tmp_path, monkeypatch):
    """An interrupted launch left 5 results and one failure.json; the same 12 jobs launched again."""
    for i in range(5):
        _result(tmp_path / f"job{i}", "metrics.json", 900.0)
    _result(tmp_path / "job5", "failure.json", 950.0)  # interrupted: it trains again in this launch
    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)
    progress.announce(total=12, already=5, sweep_dir=tmp_path)
    _result(tmp_path / "job6", "metrics.json", 1010.0)
    _result(tmp_path / "job7", "metrics.json", 1020.0)
    monkeypatch.setattr(progress.time, "time", lambda: 1020.0)
    assert progress.line(tmp_path).startswith("  [7/12 done, 0 failed")
    _result(tmp_path / "job5", "metrics.json", 1030.0)  # the interrupted run, trained now
    _result(tmp_path / "job8", "failure.json", 990.0)  # a failure of this launch, on a file server whose
    monkeypatch.setattr(progress.time, "time", lambda: 1040.0)  # clock is behind ours: still counted
    assert progress.line(tmp_path).startswith("  [8/12 done, 1 failed")


def test_results_of_other_jobs_in_the_folder_are_not_this_launchs(tmp_path, monkeypatch):
    """Seeds 2 and 3 added to a folder that holds seeds 0 and 1."""
    for seed in (0, 1):
        _result(tmp_path / f"seed={seed}", "metrics.json", 900.0)
    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)
    progress.announce(total=2, already=0, sweep_dir=tmp_path)
    _result(tmp_path / "seed=2", "metrics.json", 1010.0)
    monkeypatch.setattr(progress.time, "time", lambda: 1010.0)
    assert progress.line(tmp_path) == "  [1/2 done, 0 failed, ETA 10 s]"


def test_the_label_adds_what_the_job_changes_beyond_the_four_knobs():
    from mnist_compare.run.label import job_label

    cfg = OmegaConf.create({"ws": False, "aux": 0.0, "seed": 0})
    assert job_label(cfg, "deep", ["arch=deep", "ws=false", "aux=0", "seed=0"]) == "arch=deep ws=false aux=0.0 seed=0"
    assert job_label(cfg, "deep", ["arch=deep", "+arch.pipe.dropout=0.3", "seed=0", "data.data_dir=/x",
                                   "checkpoint_after_s=60", "~logger"]) == \
        "arch=deep ws=false aux=0.0 seed=0 arch.pipe.dropout=0.3 ~logger"
    long = job_label(cfg, "conv", ["arch.pipe.channels=[16,32,64,64,128,256,512,1024]", "model.optimizer.lr=1e-2",
                                   *(f"+trainer.k{i}=1" for i in range(30))])
    assert long == ("arch=conv ws=false aux=0.0 seed=0 arch.pipe.channels=[16,32,64,64,128,256,51… "
                    "model.optimizer.lr=0.01 trainer.k0=1 trainer.k1=1 trainer.k2=1 trainer.k3=1 (+26 more)")


@pytest.mark.slow
def test_a_sweep_that_adds_seeds_counts_and_names_its_own_jobs(tmp_path, mnist_dir):
    sweep = tmp_path / "sweep"
    common = ["-m", "arch=shallow", "trainer.max_epochs=1", "data.n_pairs=100", "hydra/launcher=basic",
              f"hydra.sweep.dir={sweep}"]
    assert train(*common, "seed=0,1").returncode == 0
    done = train(*common, "seed=2,3")
    assert done.returncode == 0, done.stderr
    assert re.findall(r"\[(\d+/\d+) done", done.stdout) == ["1/2", "2/2"], done.stdout
    training = [line for line in done.stdout.splitlines() if ": training " in line]
    assert [line.split(" - ")[1].split(": training")[0] for line in training] == [
        f"arch=shallow ws=false aux=0.0 seed={seed} trainer.max_epochs=1 data.n_pairs=100" for seed in (2, 3)]
