"""hydra/launcher=slurm on a real one-node SLURM cluster (scripts/slurm-test-cluster, started here):
a sweep of the study's models as one job array through sbatch, and what `scontrol requeue`, `scancel` and a
time limit leave in a sweep's folders; plus resuming a killed run from its last epoch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, hooked_pythonpath, run_cli, train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CLUSTER = ROOT / "scripts" / "slurm-test-cluster"
# the sweep through sbatch: both model families and both weight-sharing settings (each process pays
# ~5 s of imports, so four array tasks rather than the study's twelve; all twelve run in test_train)
COMBINATIONS = {(a, w, 0.0) for a in ("shallow", "conv") for w in (True, False)}


def cannot_run_slurm() -> str | None:
    """Why the cluster cannot be started here, if it cannot."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "the SLURM test cluster needs root on Linux (slurmd starts jobs as their user); CI runs as root"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


@pytest.fixture(scope="session")
def slurm(mnist_dir: Path) -> Iterator[str]:
    """The test cluster's partition. Installed where missing and started for these tests (a few
    seconds once installed), stopped after them unless it was already running."""
    if reason := cannot_run_slurm():
        if os.environ.get("MNIST_COMPARE_REQUIRE_SLURM"):  # CI: these tests must run, never be skipped
            pytest.fail(reason)
        pytest.skip(reason)
    was_running = subprocess.run([CLUSTER, "status"], capture_output=True, check=False).returncode == 0
    started = subprocess.run([CLUSTER, "start"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             timeout=900, check=False)
    assert started.returncode == 0, started.stderr
    conf = subprocess.run([CLUSTER, "env"], capture_output=True, text=True, check=True).stdout.split("=", 1)[1]
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf.strip()  # for the SLURM commands of the tests and the sweeps they start
    yield "test"
    if before is None:
        os.environ.pop("SLURM_CONF")
    else:
        os.environ["SLURM_CONF"] = before
    if not was_running:
        subprocess.run([CLUSTER, "stop"], capture_output=True, check=False)


# A short run that draws random numbers all through training (shuffled batches, augmentation,
# dropout, a cosine schedule), so that a resumed run equals an uninterrupted one only when every
# state was restored; ~0.5 s per epoch at one thread.
SHORT_BEST = ["experiment=best", "trainer.max_epochs=4", "data.n_pairs=500"]


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> dict[str, Any]:
    """metrics.json of SHORT_BEST, seed 0, one thread (as a SLURM job with cpus_per_task=1), run
    without a stop."""
    out = tmp_path_factory.mktemp("uninterrupted")
    done = train(*SHORT_BEST, "seed=0", "threads=1", "checkpoint_after_s=null", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "metrics.json").read_text())


def slurm_cmd(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 180) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"waited {timeout} s for {what}")


def freeze(job: str) -> None:
    """SIGSTOP to the job's run, through SLURM (SLURM still counts its time), and wait until it
    has landed: `scancel --signal` returns before the signal does."""
    slurm_cmd("scancel", "--signal=STOP", job)
    raw = slurm_cmd("squeue", "-h", "-j", job, "-o", "%A")  # listpids wants the plain job id

    def stopped() -> bool:
        rows = [r.split() for r in slurm_cmd("scontrol", "listpids", raw).splitlines()[1:]]
        states = [Path(f"/proc/{r[0]}/stat").read_text().split()[2] for r in rows if r[2] == "0"]
        return bool(states) and set(states) == {"T"}

    wait_for(f"job {job} to stop", stopped)


def record(folder: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def logged_steps(folder: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of `tag` over every TensorBoard event file of a run, in file order."""
    points = []
    for events in sorted((folder / "tb").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events)).Reload()
        if tag in acc.Tags()["scalars"]:
            points += [(e.step, e.value) for e in acc.Scalars(tag)]
    return points


@pytest.mark.slow
def test_study_sweep_runs_through_sbatch_as_one_job_array(tmp_path, slurm):
    sweep = tmp_path / "sweep"
    done = train("-m", "hydra/launcher=slurm", f"hydra.launcher.partition={slurm}", "arch=shallow,conv",
                 "ws=true,false", "aux=0", "trainer=fast_dev_run", f"hydra.sweep.dir={sweep}", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (script,) = sweep.glob(".submitit/*/*_submission.sh")  # one sbatch: one array of 4 tasks
    assert "#SBATCH --array=0-3%4" in script.read_text()
    array = script.parent.name
    # submitit returns once every result file is written; a task's process may still be exiting,
    # so SLURM's accounting can say RUNNING for a moment longer: wait for the final states
    def final_states() -> list[str] | None:
        rows = slurm_cmd("sacct", "-n", "-X", "-P", "-j", array, "-o", "JobID,State").splitlines()
        return None if any(r.endswith(("|PENDING", "|RUNNING", "|COMPLETING")) for r in rows) else rows

    states = wait_for("the array's final states", final_states, timeout=60)
    assert sorted(states) == sorted(f"{array}_{i}|COMPLETED" for i in range(4))
    # job states come from sacct (the cluster's accounting): no warning from submitit's polls
    assert "sacct" not in done.stdout + done.stderr and "Bypassing" not in done.stdout + done.stderr
    records = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert {(r["arch"], r["ws"], r["aux"]) for r in records} == COMBINATIONS and len(records) == 4
    local = tmp_path / "local"
    assert train("arch=conv", "trainer=fast_dev_run", f"hydra.run.dir={local}").returncode == 0
    keys = set(json.loads((local / "metrics.json").read_text()))
    assert all(set(r) == keys for r in records)
    assert {r["threads"] for r in records} == {1}  # threads follow cpus_per_task
    collected = run_cli("mnist_compare.collect", str(sweep))
    assert collected.returncode == 0, collected.stderr
    assert (sweep / "results.md").is_file()


# Loaded by the sweep's SLURM jobs (HOLD_GATE set): on a job's first attempt, training waits in
# the middle of the epoch after its first saved one (after that epoch's first step) until the gate
# file exists, having said so in a file of its own (HOLD_GATE.held.<array task>). So the test
# stops each run mid-training (SIGSTOP) before it can finish, however slow or loaded the machine;
# signal handlers still run meanwhile.
HOLD_AFTER_SAVE = """
import os

if os.environ.get("HOLD_GATE") and os.environ.get("SLURM_JOB_ID") and not os.environ.get("SLURM_RESTART_COUNT"):
    import time

    from mnist_compare.run import cluster

    _save, _saved = cluster.ResumeCheckpoint.on_train_epoch_end, []

    def _saving(self, trainer, pl_module):
        _save(self, trainer, pl_module)
        _saved.append(trainer.current_epoch)

    def _held(self, trainer, pl_module, outputs, batch, batch_idx):
        if _saved:
            open(f"{os.environ['HOLD_GATE']}.held.{os.environ['SLURM_ARRAY_TASK_ID']}", "a").close()
            while not os.path.exists(os.environ["HOLD_GATE"]):
                time.sleep(0.05)

    cluster.ResumeCheckpoint.on_train_epoch_end = _saving
    cluster.ResumeCheckpoint.on_train_batch_end = _held
"""


@pytest.mark.slow
def test_requeue_cancel_and_time_limit_as_a_cluster_delivers_them(tmp_path, slurm, uninterrupted):
    """Three runs of one sweep, each held in the epoch after its first saved one (a test hook)
    and stopped there (SIGSTOP through SLURM), so that a short run cannot finish first: seed 0 requeued
    (`scontrol requeue`) restarts by itself and continues from its last epoch, exactly as an
    uninterrupted run; seed 1 passes its time limit; seed 2 is cancelled (`scancel`).
    Re-running the command finishes only those two."""
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=slurm", f"hydra.launcher.partition={slurm}", *SHORT_BEST, "seed=0,1,2",
            "checkpoint_after_s=0", f"hydra.sweep.dir={sweep}"]
    gate = tmp_path / "gate"
    env = {**os.environ, "HOLD_GATE": str(gate),  # sbatch passes the environment on to the jobs
           "PYTHONPATH": hooked_pythonpath(tmp_path / "hook", HOLD_AFTER_SAVE)}
    with open(tmp_path / "first.log", "w") as out:
        first = subprocess.Popen([sys.executable, "-m", "mnist_compare.train", *args], cwd=ROOT, stdout=out,
                                 stderr=subprocess.STDOUT, env=env)
    array = None
    try:
        array = wait_for("the array job", lambda: next(sweep.glob(".submitit/*_0"), None)).name.split("_")[0]
        job = {seed: f"{array}_{seed}" for seed in range(3)}  # array task i = the sweep's job i = seed i

        def folder(seed: int) -> Path | None:
            return next(sweep.glob(f"*seed={seed},*"), None)

        def held(seed: int) -> None:  # its first epoch saved, held in its second
            wait_for(f"seed {seed} held", lambda: (tmp_path / f"gate.held.{seed}").exists())

        def stop_after_first_saved_epoch(seed: int) -> None:
            held(seed)
            freeze(job[seed])

        stop_after_first_saved_epoch(0)  # the two cores run seeds 0 and 1 first
        # seed 1: SLURM's warning before a time limit (submitit's sbatch --signal=USR2@120), noted
        # while it runs on, then the limit itself: already past (SLURM checks limits every 30 s;
        # the rest goes on meanwhile)
        held(1)
        slurm_cmd("scancel", "--signal=USR2", job[1])
        wait_for("seed 1's note of the warning", lambda: "time limit near" in (folder(1) / "train.log").read_text())
        freeze(job[1])
        slurm_cmd("scontrol", "update", f"JobId={job[1]}", "TimeLimit=0")
        slurm_cmd("scontrol", "requeue", job[0])
        assert wait_for("seed 0's record", lambda: record(folder(0), "failure.json"))["status"] == "requeued"
        stop_after_first_saved_epoch(2)  # seed 2 started on the core seed 0 left
        slurm_cmd("scancel", job[2])
        gate.touch()  # every run is stopped: none is held any more (seed 0's second attempt never was)
        assert wait_for("seed 2's record", lambda: record(folder(2), "failure.json"))["status"] == "cancelled"
        # SLURM holds a requeued job for two minutes before it may start again: not here
        wait_for("seed 0 back in the queue", lambda: slurm_cmd("squeue", "-h", "-j", job[0], "-o", "%T") == "PENDING")
        slurm_cmd("scontrol", "update", f"JobId={job[0]}", "StartTime=now")
        timeout = wait_for("seed 1's record", lambda: record(folder(1), "failure.json"), timeout=120)
        assert timeout["status"] == "timeout" and timeout["slurm_state"] == "TIMEOUT"
        # the warning was noted, and did not end the run (submitit's handler would have requeued it)
        assert "time limit near" in (folder(1) / "train.log").read_text()
        wait_for("seed 0 to finish", lambda: slurm_cmd("sacct", "-n", "-X", "-P", "-j", job[0], "-o", "State")
                 == "COMPLETED")
        check_and_rerun(args, folder, uninterrupted)
        # the first command ends last: submitit gives a job that left no result 15 s to write one
        assert first.wait(timeout=300) != 0  # it reports its timed-out and cancelled jobs
    finally:
        gate.touch()  # a failed test leaves no job held (until its time limit)
        if array is not None:
            subprocess.run(["scancel", array], capture_output=True, check=False)  # none left running
        if first.poll() is None:
            first.kill()


def check_and_rerun(args: list[str], folder: Callable[[int], Path], uninterrupted: dict[str, Any]) -> None:
    """What the first command's jobs left, then the same command again (the first one may still
    be waiting on submitit, but none of its jobs runs any more)."""
    # seed 0: restarted by SLURM, resumed from its last.ckpt, finished once, as if never stopped
    m = record(folder(0), "metrics.json")
    assert m is not None and not (folder(0) / "failure.json").exists() and not (folder(0) / "last.ckpt").exists()
    log = (folder(0) / "train.log").read_text()
    assert "attempt 2" in log and "resuming from" in log
    assert m["history"] == uninterrupted["history"] and m["test_acc"] == uninterrupted["test_acc"]
    assert m["epochs"] == 4 and all(len(v) == 4 for v in m["history"].values())
    assert logged_steps(folder(0), "val/acc") == [(e + 1, pytest.approx(a)) for e, a in
                                                   enumerate(m["history"]["val_acc"])]
    # seeds 1 and 2: recorded as SLURM ended them, their last saved epoch kept for the re-run
    for seed in (1, 2):
        assert not (folder(seed) / "metrics.json").exists() and (folder(seed) / "last.ckpt").exists()
        assert record(folder(seed), "failure.json")["checkpoint_epochs"] >= 1

    finished = (folder(0) / "metrics.json").stat().st_mtime_ns
    again = train(*args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (folder(0) / "metrics.json").stat().st_mtime_ns == finished  # not run again
    for seed in (1, 2):
        m = record(folder(seed), "metrics.json")
        assert m is not None and m["epochs"] == 4 and all(len(v) == 4 for v in m["history"].values())
        assert not (folder(seed) / "failure.json").exists()
        assert "resuming from" in (folder(seed) / "train.log").read_text()


@pytest.mark.slow
def test_gpu_launcher_and_cluster_settings_reach_sbatch(tmp_path, slurm):
    """The settings a real cluster asks for, from the command line to sbatch. The test cluster has
    no GPU: sbatch refuses the job, which shows that the request reached it."""
    sweep = tmp_path / "sweep"
    done = train("-m", "hydra/launcher=slurm_gpu", f"hydra.launcher.partition={slurm}", "hydra.launcher.account=study",
                 "hydra.launcher.qos=normal", "hydra.launcher.timeout_min=20",
                 "+hydra.launcher.additional_parameters.mail-type=END", "trainer=fast_dev_run", "seed=0,1",
                 f"hydra.sweep.dir={sweep}")
    assert done.returncode != 0 and "gres" in done.stderr.lower()
    (script,) = sweep.glob(".submitit/.submission_file_*.sh")
    flags = set(script.read_text().splitlines())
    assert {"#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=8GB", "#SBATCH --account=study",
            "#SBATCH --qos=normal", "#SBATCH --time=20", "#SBATCH --mail-type=END",
            f"#SBATCH --partition={slurm}"} <= flags


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_epoch_as_if_never_stopped(tmp_path, uninterrupted):
    """No cluster needed: a run killed (SIGKILL) after a saved epoch, started again in its folder,
    continues from there; history, TensorBoard log and numbers equal an uninterrupted run's."""
    run = tmp_path / "run"
    args = [*SHORT_BEST, "seed=0", "threads=1", "checkpoint_after_s=0", f"hydra.run.dir={run}"]
    killed = subprocess.Popen([sys.executable, "-m", "mnist_compare.train", *args], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for("last.ckpt", (run / "last.ckpt").exists, timeout=120)
        os.killpg(killed.pid, signal.SIGKILL)
    finally:
        killed.wait()
    assert not (run / "metrics.json").exists()
    resumed = train(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    m = json.loads((run / "metrics.json").read_text())
    assert m["history"] == uninterrupted["history"] and m["test_acc"] == uninterrupted["test_acc"]
    assert set(m) == set(uninterrupted) and not (run / "last.ckpt").exists()
    assert logged_steps(run, "val/acc") == [(e + 1, pytest.approx(a)) for e, a in enumerate(m["history"]["val_acc"])]


@pytest.mark.parametrize(("scontrol", "squeue", "sacct", "status"), [
    ("JobState=COMPLETING Reason=None Restarts=1", "PENDING", "RUNNING", "requeued"),
    ("JobState=COMPLETING Reason=None Restarts=0", "COMPLETING", "CANCELLED by 1000", "cancelled"),
    ("JobState=COMPLETING Reason=None Restarts=0", "COMPLETING", "PREEMPTED", "preempted"),
    ("JobState=COMPLETING Reason=TimeLimit Restarts=0", "COMPLETING", None, "timeout"),  # no accounting
    ("JobState=COMPLETING Reason=None Restarts=0", "COMPLETING", None, "terminated"),
])
def test_stop_reason_reads_what_slurm_says(tmp_path, monkeypatch, scontrol, squeue, sacct, status):
    """SLURM's answers for the cases the test cluster cannot produce (preemption, no accounting),
    through stand-in commands: a stop is never misnamed, only left unnamed ("terminated")."""
    from mnist_compare.run import cluster

    for name, out in (("scontrol", scontrol), ("squeue", squeue), ("sacct", sacct)):
        command = tmp_path / name
        answer = f"echo '{out}'" if out else "echo 'accounting storage is disabled' >&2; exit 1"
        command.write_text(f"#!/bin/sh\n{answer}\n")
        command.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert cluster.stop_reason("7_1")[0] == status
