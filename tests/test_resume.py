"""A run's identity is its resolved config: resume, duplicates, clean re-runs, code versions."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, hooked_pythonpath, train
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from mnist_compare.run.identity import job_dirname

QUICK = ["trainer.max_epochs=1", "data.n_pairs=200", "hydra/launcher=basic"]


def snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_one_folder_name_per_value_spelling():
    assert job_dirname(["aux=0", "ws=False", "seed=3"]) == job_dirname(["seed=3", "aux=0.0", "ws=false"])
    assert job_dirname(["model.optimizer.lr=1e-3"]) == job_dirname(["model.optimizer.lr=0.001"])
    assert job_dirname(["data.data_dir=/x", "aux=0.5"]) == "aux=0.5"  # settings that cannot change numbers
    assert job_dirname(["threads=2"]) == "threads=2"  # can change them: part of the identity


@pytest.mark.slow
def test_equivalent_spellings_resume_the_finished_runs_untouched(tmp_path, mnist_dir):
    sweep = tmp_path / "sweep"
    first = train("-m", "aux=0,0.5", "ws=false", *QUICK, f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2
    before = {job: snapshot(job) for job in jobs}
    assert all(".hydra/config.yaml" in map(str, files) and "train.log" in map(str, files) for files in before.values())
    # other spellings of the same values, and an explicit default (seed=0), name the same runs
    again = train("-m", "aux=0.0,0.5", "ws=False", "seed=0", *QUICK, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr
    assert "training" not in again.stdout
    assert again.stdout.count("skipped") == 2
    assert "2 jobs checked in" in again.stdout and "all done in an earlier launch" in again.stdout
    assert sorted(p for p in sweep.iterdir() if p.is_dir()) == jobs  # no new folder
    assert {job: snapshot(job) for job in jobs} == before  # not a byte, not a timestamp changed


@pytest.mark.slow
def test_a_rerun_of_an_unfinished_job_starts_its_log_clean(tmp_path, mnist_dir):
    out = tmp_path / "run"
    args = ["arch=shallow", "trainer.max_epochs=2", "data.n_pairs=200", f"hydra.run.dir={out}"]
    assert train(*args).returncode == 0
    (out / "metrics.json").unlink()  # as if killed before the end
    (out / "failure.json").write_text("{}")
    stale = next((out / "tb").glob("events.out.tfevents.*"))
    done = train(*args)
    assert done.returncode == 0, done.stderr
    assert stale not in list((out / "tb").glob("events.out.tfevents.*"))
    logged = EventMultiplexer({"run": str(out / "tb")}).Reload().Scalars("run", "test/acc")
    assert [e.step for e in logged] == [1, 2]  # one attempt's curve, epochs counted from 1
    assert not (out / "failure.json").exists()
    assert (out / "train.log").read_text().count("training 2 epochs") == 1


@pytest.mark.slow
def test_resume_refuses_runs_made_by_other_code(tmp_path, mnist_dir):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", *QUICK, f"hydra.sweep.dir={sweep}"]
    assert train(*args).returncode == 0
    finished = sorted(sweep.glob("*/metrics.json"))
    record = json.loads(finished[0].read_text())
    record["code"]["source_hash"] = "0123456789abcdef"
    finished[0].write_text(json.dumps(record))
    finished[1].unlink()
    done = train(*args)
    assert done.returncode == 2
    assert "finished runs made by other code or libraries" in done.stderr and "new hydra.sweep.dir" in done.stderr
    assert not finished[1].exists()  # nothing trained


@pytest.mark.slow
def test_records_say_which_code_and_libraries_made_them(tmp_path, mnist_dir):
    out = tmp_path / "run"
    assert train("trainer=fast_dev_run", f"hydra.run.dir={out}").returncode == 0
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["code"]["source_hash"]) == 16 and m["code"]["version"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode == 0:
        assert m["code"]["commit"] == head.stdout.strip() and isinstance(m["code"]["dirty"], bool)
    assert {"python", "torch", "pytorch_lightning", "hydra", "omegaconf"} <= set(m["versions"])
    assert m["code"]["user_modules"] == {}
    assert len(m["run_id"]) == 16 and m["threads"] == 1 and m["config"]["threads"] == 1


@pytest.mark.slow
def test_a_single_run_reproduces_the_sweep_job_with_the_same_settings(tmp_path, mnist_dir):
    """Threads are 1 by default everywhere: a ConvNet's numbers depend on the thread count."""
    sweep, single = tmp_path / "sweep", tmp_path / "single"
    common = ["arch=conv", "ws=true", "aux=0.5", "seed=5", "trainer.max_epochs=3", "data.n_pairs=300"]
    done = train("-m", *common, "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    assert train(*common, f"hydra.run.dir={single}").returncode == 0
    (job,) = sweep.glob("*/metrics.json")
    a, b = json.loads(job.read_text()), json.loads((single / "metrics.json").read_text())
    assert a["run_id"] == b["run_id"] and a["history"] == b["history"]


@pytest.mark.slow
def test_ctrl_c_of_a_single_run_says_what_was_kept(tmp_path, mnist_dir):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mnist_compare.train", "arch=conv", "trainer.max_epochs=50",
                             f"hydra.run.dir={out}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while not (out / "tb").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and "no metrics.json" in lines[0], err
    assert json.loads((out / "failure.json").read_text())["status"] == "interrupted"
    assert not (out / "metrics.json").exists()


# Loaded by every process of a sweep (when IN_FINALIZER is set): in a parallel worker, each job
# from seed 2 on starts inside a finalizer (`__del__`, as Lightning's profiler's) that waits for
# the Ctrl-C, after saying so in a file of its own (IN_FINALIZER.<pid>).
FINALIZER_AT_CTRL_C = """
import os

if os.environ.get("IN_FINALIZER"):
    import time

    from hydra.core import utils

    _run_job = utils.run_job

    class _Finalized:
        def __del__(self):
            open(f"{os.environ['IN_FINALIZER']}.{os.getpid()}", "a").close()
            time.sleep(60)

    def _run_job_after_a_finalizer(*args, **kwargs):
        if "LokyProcess" in open("/proc/self/cmdline").read() and kwargs["config"].seed >= 2:
            _Finalized()
        return _run_job(*args, **kwargs)

    utils.run_job = _run_job_after_a_finalizer
"""


@pytest.mark.slow
def test_ctrl_c_of_a_sweep_prints_the_command_that_resumes_it(tmp_path, mnist_dir):
    """The Ctrl-C reaches the workers too, and one caught inside a finalizer printed five lines
    of "Exception ignored" among the sweep's one line (a flaky CI failure): here it always is."""
    sweep, flag = tmp_path / "sweep", tmp_path / "in_finalizer"
    path = hooked_pythonpath(tmp_path / "hook", FINALIZER_AT_CTRL_C)
    args = ["-m", "arch=shallow", "seed=0,1,2,3,4,5,6,7", "trainer.max_epochs=4", "data.n_pairs=300",
            "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]  # two workers, wherever it runs
    proc = subprocess.Popen([sys.executable, "-m", "mnist_compare.train", *args], cwd=ROOT, text=True,
                            env={**os.environ, "PYTHONPATH": path, "IN_FINALIZER": str(flag)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while not (len(waiting := list(tmp_path.glob(f"{flag.name}.*"))) == 2  # both workers, in a finalizer
               and len(list(sweep.glob("*/metrics.json"))) == 2) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
    _, err = proc.communicate(timeout=120)
    assert len(waiting) == 2 and proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), err
    assert f"hydra.sweep.dir={sweep}" in lines[0] and "2 of 8 runs are finished and kept" in lines[0]
    resume = shlex.split(lines[0].split("resume with: ")[1])
    assert resume[:3] == [sys.executable, "-m", "mnist_compare.train"]
    done = train(*resume[3:])
    assert done.returncode == 0, done.stderr
    assert len(list(sweep.glob("*/metrics.json"))) == 8


@pytest.mark.slow
def test_a_ctrl_c_inside_a_finalizer_still_stops_the_command():
    """A Ctrl-C landing while a `__del__` runs (a Lightning profiler's) was printed as five lines
    of "Exception ignored" and then lost: it must stop the command, without those lines."""
    code = """
import signal, sys, time
from mnist_compare.run.outcome import interrupt_not_lost
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.unraisablehook = interrupt_not_lost
class Finalized:
    def __del__(self):
        raise KeyboardInterrupt  # as a Ctrl-C arriving inside it
try:
    Finalized()
    time.sleep(5)
    print("the Ctrl-C was lost")
except KeyboardInterrupt:
    print("interrupted")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "interrupted" and "Exception ignored" not in done.stderr, (done.stdout, done.stderr)


def _result(folder, name: str, when: float) -> None:
    folder.mkdir()
    (folder / name).write_text("{}")
    os.utime(folder / name, (when, when))


def test_progress_counts_done_and_failed_runs_and_estimates_the_rest(tmp_path, monkeypatch):
    from mnist_compare.run import progress

    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)
    progress.announce(total=10, already=2)
    monkeypatch.setattr(progress.time, "time", lambda: 1120.0)  # 2 minutes later
    for i in range(6):  # 2 finished before this launch, 4 by it
        _result(tmp_path / f"job{i}", "metrics.json", 900.0 if i < 2 else 1000.0 + 20 * i)
    _result(tmp_path / "bad", "failure.json", 1110.0)
    # 5 jobs ended in 120 s of this launch (fewer than the window: the average), 3 left: 72 s
    assert progress.line(tmp_path) == "  [6/10 done, 1 failed, ETA 72 s]"
    monkeypatch.delenv(progress.ENV)
    assert progress.line(tmp_path) == ""


def test_progress_eta_follows_the_pace_of_the_latest_jobs(tmp_path, monkeypatch):
    """The Table-1 sweep's order: 80 short MLP jobs, then 40 ConvNet jobs ten times longer."""
    from mnist_compare.run import progress

    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)
    progress.announce(total=100, already=0)
    for i in range(20):  # a job a second
        _result(tmp_path / f"mlp{i}", "metrics.json", 1001.0 + i)
    for i in range(12):  # then one every 10 s
        _result(tmp_path / f"conv{i}", "metrics.json", 1030.0 + 10 * i)
    monkeypatch.setattr(progress.time, "time", lambda: 1140.0)
    # 68 left at 10 s each (the average since the start, 140 s / 32, would say 5 min)
    assert progress.line(tmp_path) == "  [32/100 done, 0 failed, ETA 11 min]"


def test_progress_eta_is_not_fooled_by_results_that_land_together(tmp_path, monkeypatch):
    """Two batched cells of ten seeds (accel/fused.py) end at once: their twenty results do not
    say that a job takes no time."""
    from mnist_compare.run import progress

    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)
    progress.announce(total=60, already=0)
    for i in range(40):  # two cells per worker so far, every 20 s, each cell's results together
        _result(tmp_path / f"job{i}", "metrics.json", 1020.0 + 20 * (i // 20) + (i % 20) * 0.001)
    monkeypatch.setattr(progress.time, "time", lambda: 1041.0)
    # 40 jobs in the last 41 s, 20 left: 20 s, not the 0 s of the last ten results' pace
    assert progress.line(tmp_path) == "  [40/60 done, 0 failed, ETA 20 s]"


def test_progress_eta_counts_the_seeds_trained_with_a_job_as_ended(tmp_path, monkeypatch):
    """The first record of a batched cell is written 80 s after the launch, its nine other seeds'
    right after it: 80 s for ten runs, not for one."""
    from mnist_compare.run import progress

    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)
    progress.announce(total=80, already=0)
    _result(tmp_path / "job0", "metrics.json", 1080.0)
    monkeypatch.setattr(progress.time, "time", lambda: 1080.0)
    assert progress.line(tmp_path, waiting=9) == "  [1/80 done, 0 failed, ETA 9 min]"  # 70 left at 8 s
    assert progress.line(tmp_path) == "  [1/80 done, 0 failed, ETA 105 min]"  # a run alone: 79 at 80 s


def test_progress_eta_counts_a_cells_seeds_in_the_pace_of_the_latest_jobs(tmp_path, monkeypatch):
    """A cell's first record after slower jobs: its nine other seeds ended with it, so the last
    ten jobs ended in the 80 s since the previous one, 8 s each, not 170 s for ten."""
    from mnist_compare.run import progress

    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)
    progress.announce(total=100, already=0)
    for i in range(12):  # ConvNet-like jobs, one every 10 s
        _result(tmp_path / f"conv{i}", "metrics.json", 1010.0 + 10 * i)
    _result(tmp_path / "cell0", "metrics.json", 1200.0)
    monkeypatch.setattr(progress.time, "time", lambda: 1200.0)
    assert progress.line(tmp_path, waiting=9) == "  [13/100 done, 0 failed, ETA 10 min]"  # 78 left at 8 s


def test_progress_eta_survives_file_times_from_another_clock(tmp_path, monkeypatch):
    """On a cluster the result files are dated by the file server: never a negative ETA, and an
    estimate even when every file looks older than the launch."""
    from mnist_compare.run import progress

    monkeypatch.setattr(progress.time, "time", lambda: 1000.0)
    progress.announce(total=40, already=0)
    for i in range(20):  # the file server 10 minutes behind
        _result(tmp_path / f"job{i}", "metrics.json", 400.0 + 5 * i)
    monkeypatch.setattr(progress.time, "time", lambda: 1100.0)
    assert progress.line(tmp_path) == "  [20/40 done, 0 failed, ETA 100 s]"  # 100 s for 20: 5 s each
    for i in range(20, 32):  # now 10 minutes ahead
        _result(tmp_path / f"job{i}", "metrics.json", 1700.0 + i)
    assert progress.line(tmp_path) == "  [32/40 done, 0 failed, ETA 25 s]"  # the average: 100 s / 32


@pytest.mark.slow
def test_resume_refuses_runs_made_by_an_edited_user_package(tmp_path, mnist_dir):
    """The user's own code named by a `_target_` makes the numbers as much as ours."""
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("from mnist_compare.models import mlp as head\n")
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1", "arch.classifier._target_=userpkg.head", *QUICK, f"hydra.sweep.dir={sweep}"]
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    assert train(*args, env=env).returncode == 0
    record = json.loads(next(sweep.glob("*seed=0*/metrics.json")).read_text())
    assert list(record["code"]["user_modules"]) == ["userpkg"]
    next(sweep.glob("*seed=1*/metrics.json")).unlink()
    (package / "__init__.py").write_text("from mnist_compare.models import mlp as head  # edited\n")
    done = train(*args, env=env)
    assert done.returncode == 2 and "made by other code or libraries" in done.stderr
    assert not list(sweep.glob("*seed=1*/metrics.json"))
