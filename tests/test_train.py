"""The entry point end to end, on real MNIST: outputs, sweeps, determinism, resume, failures."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, hooked_pythonpath, run_cli, train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_models import PARAMS


@pytest.mark.slow
def test_short_run_writes_a_complete_metrics_json(tmp_path, mnist_dir):
    out = tmp_path / "run"
    done = train("arch=shallow", "ws=true", "aux=0.5", "seed=3", "trainer.max_epochs=2", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert (m["arch"], m["ws"], m["aux"], m["seed"]) == ("shallow", True, 0.5, 3)
    assert m["n_params"] == PARAMS["shallow", True]
    assert m["epochs"] == m["max_epochs"] == 2 and m["status"] == "finished"
    for key in ("test_acc", "test_loss", "train_loss", "train_acc", "test_aux_acc"):
        assert len(m["history"][key]) == 2, key
    assert m["test_acc"] == m["history"]["test_acc"][-1] and 0.6 < m["test_acc"] <= 1
    assert m["best_test_acc"] == max(m["history"]["test_acc"])
    assert m["history"]["test_acc"][m["best_epoch"] - 1] == m["best_test_acc"]
    assert m["test_aux_acc"] == m["history"]["test_aux_acc"][-1] and 0.3 < m["test_aux_acc"] <= 1
    assert 0 < m["train_acc"] <= 1 and m["train_loss"] > 0 and m["train_time_s"] > 0
    assert m["config"]["data"]["n_pairs"] == 1000 and m["config"]["trainer"]["max_epochs"] == 2
    events = EventAccumulator(str(out / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "test/loss", "test/acc", "test/aux_acc", "train/aux_acc"} <= tags
    logged = events.Scalars("test/acc")  # float32 in the event file, one point per epoch
    assert [e.step for e in logged] == [1, 2]  # epochs counted from 1, as in metrics.json
    assert [e.value for e in logged] == pytest.approx(m["history"]["test_acc"], rel=1e-6)
    assert "aux_loss_weight" in (out / "tb" / "hparams.yaml").read_text()


# Loaded at the start of every Python process of the sweep (launcher and workers alike): logs each
# job config that Hydra composes, each scan of Hydra's plugins with the process that made it, and
# when each process started, with its command line.
COUNT_COMPOSITIONS = """
import os
import time

def _log(line):
    with open(os.environ["COMPOSITIONS_LOG"], "a") as log:
        log.write(line + "\\n")

def _started():  # when the kernel created this process (clock ticks since boot), as time.time() says it
    ticks = int(open("/proc/self/stat").read().rpartition(")")[2].split()[19])
    uptime = float(open("/proc/uptime").read().split()[0])
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))

_log(f"process {os.getpid()} started at {_started()}: " + open("/proc/self/cmdline").read().replace(chr(0), " "))

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.plugins import Plugins

_compose, _scan = ConfigLoaderImpl.load_sweep_config, Plugins._initialize

def _counted(self, master_config, sweep_overrides):
    _log(" ".join(sweep_overrides))
    deadline = time.time() + 120
    while os.environ.get("WAIT_FOR_A_WORKER") and time.time() < deadline and \
            "popen_loky_posix" not in open(os.environ["COMPOSITIONS_LOG"]).read():
        time.sleep(0.05)  # the check goes on once a worker it started has started
    return _compose(self, master_config, sweep_overrides)

def _scan_counted(self):
    _log(f"plugins scanned by {os.getpid()}")
    return _scan(self)

ConfigLoaderImpl.load_sweep_config = _counted
Plugins._initialize = _scan_counted
"""


@pytest.mark.slow
def test_all_twelve_combinations_run_with_fast_dev_run(tmp_path, mnist_dir):
    sweep = tmp_path / "sweep"
    composed = tmp_path / "compositions.log"
    hook = {"COMPOSITIONS_LOG": str(composed), "PYTHONPATH": hooked_pythonpath(tmp_path / "hook", COUNT_COMPOSITIONS)}
    done = train("-m", "arch=shallow,deep,conv", "ws=true,false", "aux=0,0.5", "seed=0", "trainer=fast_dev_run",
                 f"hydra.sweep.dir={sweep}", env=hook)
    assert done.returncode == 0, done.stderr
    # the jobs' configs composed by the checked sweeper, from the YAML files once per architecture
    # (the jobs of one differ in values only, accel/compose.py), and not again by the worker
    lines = composed.read_text().splitlines()
    jobs = [line for line in lines if not line.startswith(("plugins scanned", "process "))]
    assert len(jobs) == len({line.split()[0] for line in jobs}) == 3, jobs
    found = {}
    for path in sweep.glob("*/metrics.json"):
        m = json.loads(path.read_text())
        found[m["arch"], m["ws"], m["aux"]] = m
        assert m["n_params"] == PARAMS[m["arch"], m["ws"]] and m["epochs"] == 1
    assert set(found) == {(a, w, x) for a in ("shallow", "deep", "conv") for w in (True, False) for x in (0.0, 0.5)}
    # one progress mark per finished job; a job counts the results written when it counts, its own and
    # any that jobs of other workers wrote just before (two jobs ending together may both say 5/12): the
    # k-th mark says k, or up to one more per other worker
    from joblib import effective_n_jobs

    marks = sorted(int(n) for n in re.findall(r"\[(\d+)/12 done, 0 failed", done.stdout))
    others = effective_n_jobs(-1) - 1  # the launcher's default: a worker per core
    assert len(marks) == 12 and all(k <= n <= k + others for k, n in enumerate(marks, 1)), marks
    assert "[12/12 done, 0 failed]" in done.stdout
    # the pre-launch check says what it is doing before the console would fall silent, then how long it took
    checking = done.stdout.find("checking the settings of 12 jobs before any starts")
    checked = re.search(r"12 jobs checked in \d+\.\d s\n", done.stdout)
    assert checked, done.stdout[:2000]
    assert 0 <= checking < checked.start() < done.stdout.find("Launching jobs") < done.stdout.find("training")


def running(pid: int) -> bool:
    """Whether a process runs (a zombie left to a container's init that reaps nothing does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# Loaded in every Python process; in the sweep's loky workers it logs, for each `gc.collect()`
# call, whether loky made it (after a task), how many objects it has to scan, and how many the
# worker holds frozen.
LOG_COLLECTIONS = """
import gc
import os
import sys

if "popen_loky_posix" in open("/proc/self/cmdline").read():
    _collect = gc.collect

    def _logged(*args, **kwargs):
        by_loky = "process_executor" in sys._getframe(1).f_code.co_filename
        with open(os.environ["GC_LOG"], "a") as log:
            log.write(f"{os.getpid()} {int(by_loky)} {len(gc.get_objects())} {gc.get_freeze_count()}\\n")
        return _collect(*args, **kwargs)

    gc.collect = _logged
"""


@pytest.mark.slow
def test_a_worker_does_not_scan_every_imported_object_after_each_job(tmp_path, mnist_dir):
    """loky collects garbage after a task once a second has passed since its last collection; a
    full collection scanned the ~470,000 objects of torch, Lightning and Hydra each time (~250 ms
    a job). With what a worker imported frozen, loky's collections scan a job's few thousand
    objects, and a job's leftovers (its configs are reference cycles) are never frozen: the
    frozen set stops growing."""
    log = tmp_path / "collections.log"
    hook = {"GC_LOG": str(log), "PYTHONPATH": hooked_pythonpath(tmp_path / "hook", LOG_COLLECTIONS)}
    done = train("-m", "arch=conv", "ws=true,false", "seed=0,1,2", "trainer.max_epochs=3",  # > 1 s each
                 f"hydra.sweep.dir={tmp_path / 'sweep'}", env=hook)
    assert done.returncode == 0, done.stderr
    scans = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    by_loky = [(pid, scanned, frozen) for pid, loky, scanned, frozen in scans if loky]
    assert len(by_loky) >= 4, scans  # loky collected after (most) jobs
    assert all(scanned < 100_000 for _, scanned, _ in by_loky), scans
    for pid in {pid for pid, _, _ in by_loky}:  # no job's leftovers frozen for good: after the imports'
        frozen = [f for p, _, f in by_loky if p == pid]  # freeze, at most one more (what jobs import lazily)
        assert sum(b > a for a, b in itertools.pairwise(frozen)) <= 1, scans


@pytest.mark.slow
def test_same_config_and_seed_give_identical_results(tmp_path, mnist_dir):
    results = []
    for name in ("a", "b"):
        out = tmp_path / name
        done = train("arch=conv", "ws=false", "aux=0.5", "seed=0", "trainer.max_epochs=2", f"hydra.run.dir={out}")
        assert done.returncode == 0, done.stderr
        results.append(json.loads((out / "metrics.json").read_text())["history"])
    assert results[0] == results[1]


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_jobs(tmp_path, mnist_dir):
    sweep = tmp_path / "sweep"
    args = ["-m", "arch=shallow", "seed=0,1,2,3,4,5", "trainer.max_epochs=3", "hydra/launcher=basic",
            f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, "-m", "mnist_compare.train", *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(sweep.glob("*/metrics.json"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as kill -9 of a sweep
    proc.wait()
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sweep.glob("*/metrics.json")}
    assert 2 <= len(before) < 6
    done = train(*args)
    assert done.returncode == 0, done.stderr
    after = list(sweep.glob("*/metrics.json"))
    assert len(after) == 6
    for path, (mtime, content) in before.items():
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, content)
    assert done.stdout.count("already finished") + done.stderr.count("already finished") == len(before)
    for path in after:
        json.loads(path.read_text())  # every one complete


@pytest.mark.slow
def test_failed_job_leaves_a_record_and_the_sweep_goes_on(tmp_path, mnist_dir):
    sweep = tmp_path / "sweep"
    done = train("-m", "model.optimizer.lr=1e30,0.001", "trainer.max_epochs=1", "data.n_pairs=200",
                 "hydra/launcher=basic", f"hydra.sweep.dir={sweep}")  # lr 1e30: the loss diverges
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: a run failed (FloatingPointError: non-finite")
    failure = json.loads(next(sweep.glob("*lr=1e+30*/failure.json")).read_text())
    assert failure["status"] == "failed" and "non-finite training loss" in failure["error"]
    assert not list(sweep.glob("*lr=1e+30*/metrics.json"))
    assert list(sweep.glob("*lr=0.001*/metrics.json"))
    collected = run_cli("mnist_compare.collect", str(sweep))
    assert collected.returncode == 0, collected.stderr
    assert "failed" in collected.stdout and "non-finite training loss" in collected.stdout


@pytest.mark.slow
def test_slurm_launcher_path_with_submitit_local_executor(tmp_path, mnist_dir):
    sweep = tmp_path / "sweep"
    done = train("-m", "hydra/launcher=slurm_local", "arch=shallow,conv", "ws=true", "aux=0.5",
                 "trainer=fast_dev_run", f"hydra.sweep.dir={sweep}", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    found = sorted(json.loads(p.read_text())["arch"] for p in sweep.glob("*/metrics.json"))
    assert found == ["conv", "shallow"]


@pytest.mark.slow
def test_best_experiment_delivers_the_checkpoint_chosen_on_validation_pairs(tmp_path, mnist_dir):
    out = tmp_path / "best"
    done = train("experiment=best", "trainer.max_epochs=3", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert (m["arch"], m["ws"], m["aux"]) == ("best", True, 0.5)
    assert m["config"]["data"]["val_pairs"] == 200 and len(m["history"]["val_acc"]) == 3
    assert m["selection"] == "checkpoint with min val/loss"
    epoch = m["delivered_epoch"]
    assert m["history"]["val_loss"][epoch - 1] == min(m["history"]["val_loss"])
    # the checkpoint, re-loaded and scored, gives what its epoch's validation gave
    assert m["val_acc"] == m["history"]["val_acc"][epoch - 1]
    assert m["val_loss"] == pytest.approx(m["history"]["val_loss"][epoch - 1], rel=1e-6)
    # the test pairs were scored once, after training: no per-epoch test figure anywhere
    assert not any(k.startswith("test") for k in m["history"]) and "best_test_acc" not in m
    assert 0.5 < m["test_acc"] <= 1
    events = EventAccumulator(str(out / "tb")).Reload()
    assert [e.step for e in events.Scalars("test/acc")] == [epoch]
    assert [e.value for e in events.Scalars("test/acc")] == pytest.approx([m["test_acc"]])


@pytest.mark.slow
def test_any_checkpoint_callback_config_works(tmp_path, mnist_dir):
    out = tmp_path / "run"
    done = train("callbacks=best_on_val", "data.val_pairs=200", "trainer.max_epochs=2", "data.n_pairs=400",
                 f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["selection"] == "checkpoint with min val/loss" and m["delivered_epoch"] in (1, 2)


@pytest.mark.slow
def test_tensorboard_hparams_tab_shows_settings_and_figures(tmp_path, mnist_dir):
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "run"
    assert train("arch=deep", "aux=0.5", "trainer.max_epochs=1", f"hydra.run.dir={out}").returncode == 0
    m = json.loads((out / "metrics.json").read_text())
    events = EventAccumulator(str(out / "tb")).Reload()
    assert [e.value for e in events.Scalars("hp/test_acc")] == pytest.approx([m["test_acc"]])
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert info.hparams["aux"].number_value == 0.5 and info.hparams["model.optimizer.lr"].number_value == 0.001


@pytest.mark.slow
def test_optuna_search_optimises_validation_accuracy(tmp_path, mnist_dir):
    sweep = tmp_path / "search"
    done = train("-m", "experiment=best", "hparams_search=best_optuna", "hydra.sweeper.n_trials=2",
                 "hydra.sweeper.n_jobs=2", "trainer.max_epochs=1", "data.n_pairs=300", "data.val_pairs=100",
                 f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-2000:]
    best = (sweep / "optimization_results.yaml").read_text()
    runs = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(runs) == 2
    assert f"best_value: {max(r['val_acc'] for r in runs)}" in best


@pytest.mark.slow
def test_help_lists_the_main_knobs_with_examples():
    done = train("--help")
    assert done.returncode == 0, done.stderr
    for text in ("== Main knobs", "aux=W", "seed=N", "threads=N", "hydra/launcher=", "== Examples ==",
                 "arch: best, conv, deep, shallow"):
        assert text in done.stdout, text


@pytest.mark.slow
def test_lightning_srun_hint_is_not_printed_where_srun_exists(tmp_path, mnist_dir):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    env = {"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    done = train("trainer.max_epochs=1", "data.n_pairs=100", f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert done.returncode == 0, done.stderr
    assert "`srun` command" not in done.stdout + done.stderr and "HINT" not in done.stdout + done.stderr


def test_a_finished_run_has_flushed_and_closed_its_tensorboard_log(tmp_path, mnist_dir):
    """The figures logged after training (HPARAMS, test) are on disk, and no file of the run is
    still open, when `fit` returns, in a process that goes on to other runs (a sweep's worker,
    the benchmark), not only once it exits."""
    from hydra import compose, initialize_config_dir

    from mnist_compare.paths import CONF_DIR
    from mnist_compare.run.fit import fit

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["trainer.max_epochs=1", "data.n_pairs=200", f"data.data_dir={mnist_dir}"])
    threads = set(threading.enumerate())
    record = fit(cfg, tmp_path)
    assert set(threading.enumerate()) <= threads  # no log writer left behind (it flushes every 2 min)
    open_files = [os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink()]
    assert not [f for f in open_files if f.startswith(str(tmp_path))]
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [e.value for e in events.Scalars("hp/test_acc")] == pytest.approx([record["test_acc"]])


def test_the_record_names_the_device_it_trained_on(tmp_path, mnist_dir, monkeypatch):
    """Lightning's teardown moves the module back to the CPU after training on a GPU: the record
    must name the trainer's device, not where the module ends up. Stood in for here by a
    trainer device (`cpu:0`) that differs from the module's final one (`cpu`)."""
    import torch
    from hydra import compose, initialize_config_dir
    from pytorch_lightning.strategies import SingleDeviceStrategy

    from mnist_compare.paths import CONF_DIR
    from mnist_compare.run import fit as fit_module

    monkeypatch.setattr(SingleDeviceStrategy, "root_device", property(lambda self: torch.device("cpu", 0)))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["trainer.max_epochs=1", "data.n_pairs=200", f"data.data_dir={mnist_dir}",
                                "logger=none"])
    record = fit_module.fit(cfg, tmp_path)
    assert record["device"] == "cpu:0"


def test_adam_steps_do_not_probe_nvml_on_a_machine_without_cuda(tmp_path, mnist_dir, monkeypatch):
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import, and Adam asks whether CUDA is
    available on every step: with the variable, each step loaded NVML again (a failed dlopen
    here, 0.14-0.7 ms). Where no device is visible, every job drops it before it runs (the accel
    callback): the probes (Lightning's own, while it sets up) no longer grow with the number of steps."""
    import torch
    from hydra import compose, initialize_config_dir

    from mnist_compare.accel import ProcessSettings
    from mnist_compare.accel.cuda_probe import NVML_CHECK
    from mnist_compare.paths import CONF_DIR
    from mnist_compare.run.fit import fit

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the probe is kept, as it should be")
    probes = []
    nvml_count = torch.cuda._device_count_nvml
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: probes.append(1) or nvml_count())
    counts = {}
    for epochs in (1, 4):  # 2 and 8 Adam steps
        monkeypatch.setenv(NVML_CHECK, "1")  # as `import pytorch_lightning` leaves it
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", [f"trainer.max_epochs={epochs}", "data.n_pairs=200",
                                    f"data.data_dir={mnist_dir}", "logger=none"])
        probes.clear()
        ProcessSettings().on_job_start(cfg, task_function=fit)  # as Hydra calls it before each job
        assert fit(cfg, tmp_path / str(epochs))["epochs"] == epochs
        counts[epochs] = len(probes)
    assert counts[4] == counts[1] <= 5
    assert NVML_CHECK not in os.environ


@pytest.mark.slow
def test_accel_false_runs_the_sweep_with_hydras_own_joblib_launcher(tmp_path, mnist_dir):
    """One switch turns every speed-up off: each job composed as Hydra composes it, by the sweeper's
    check and again by Hydra's joblib launcher where it runs (`_core.execute_job`), no batched
    cell; the records are those of the default sweep, whose jobs are composed once, from one
    composition (accel/compose.py), and batched."""
    log = tmp_path / "compositions.log"
    env = {"COMPOSITIONS_LOG": str(log), "PYTHONPATH": hooked_pythonpath(tmp_path / "hook", COUNT_COMPOSITIONS)}
    sweep = ["-m", "arch=shallow", "seed=0,1,2", "trainer.max_epochs=1", "logger=none", "hydra.launcher.n_jobs=1"]
    off = train(*sweep, "accel=false", f"hydra.sweep.dir={tmp_path / 'off'}", env=env)
    assert off.returncode == 0, off.stderr
    composed = [line for line in log.read_text().splitlines() if line.startswith("arch=")]
    assert len(composed) == 6 and len(set(composed)) == 3, composed  # the check's, then the launcher's
    assert "batched with" not in off.stdout
    log.unlink()
    on = train(*sweep, f"hydra.sweep.dir={tmp_path / 'on'}", env=env)
    assert on.returncode == 0, on.stderr
    composed = [line for line in log.read_text().splitlines() if line.startswith("arch=")]
    assert len(composed) == 1 and on.stdout.count("batched with 1 other seed ") == 2, composed
    records = {}
    for name in ("off", "on"):
        records[name] = {p.parent.name: {k: v for k, v in json.loads(p.read_text()).items()
                                         if k not in ("train_time_s", "overrides")}
                         for p in (tmp_path / name).glob("*/metrics.json")}
    assert len(records["on"]) == 3 and records["off"] == records["on"]
