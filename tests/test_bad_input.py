"""Bad input: one line naming the setting and what is allowed, exit status 2, no traceback,
and no run or sweep folder at all (every job of a sweep is checked before any trains).
Each case runs the entry point in a process of its own: forked from one that has done the
imports once (as `python -m mnist_compare.train` does before it calls `cli(main)`), two at a time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT, run_cli

from mnist_compare.data import mnist

pytestmark = pytest.mark.slow  # each case runs the command in a process of its own

CASES = {  # name: (arguments, what the error line must say)
    "unknown arch": (["arch=lenet"], "arch=lenet is unknown: use one of best, conv, deep, shallow"),
    "unknown arch in a sweep": (["-m", "arch=shallow,lenet"], "arch=lenet is unknown"),
    "aux above 1": (["aux=1.5"], "aux=1.5 is not allowed: use a number from 0 to 1"),
    "aux not a number": (["aux=half"], "aux='half' is not allowed: use a number from 0 to 1"),
    "negative seed": (["seed=-1"], "seed=-1 is not allowed: use an integer >= 0"),
    "non-integer seed": (["seed=1.5"], "seed=1.5 is not allowed: use an integer >= 0"),
    # values that passed the check and then failed every job (issue 24): refused by range checks
    # and by a dry training step on one synthetic batch
    "seed above the largest seed": (["seed=4294967296"], "seed=4294967296 is not allowed: use an integer from 0 to "
                                                      "4294967295"),
    "label smoothing of 1 or more": (["model.label_smoothing=1.5"], "model.label_smoothing=1.5 is not allowed: use "
                                                                    "a number from 0 up to (not including) 1"),
    "bad label smoothing inside a sweep": (["-m", "model.label_smoothing=0,1"], "model.label_smoothing=1 is not "
                                                                                "allowed"),
    "classifier sizes that do not fit the pipes": (
        ["arch.classifier.sizes=[10,50,2]"], "the model fails a training step on one batch (RuntimeError: mat1 and "
                                             "mat2 shapes cannot be multiplied"),
    "an optimiser option that fails at its first step": (
        ["+model.optimizer.capturable=true", "trainer.accelerator=cpu"],
        "the model fails a training step on one batch (AssertionError: If capturable=True"),
    # Hydra's grammar errors, in our words rather than a link to Hydra's docs
    "a space after a comma in a sweep": (["-m", "aux=0,", "0.5"], "error: `aux=0,` has an empty value: separate a "
                                                                  "sweep's values with commas and no spaces"),
    "an unclosed range": (["-m", "seed=range(3"], "error: `seed=range(3` has an unclosed bracket or quote"),
    "zero pairs": (["data.n_pairs=0"], "data.n_pairs=0 is not allowed: use an integer from 1 to 5000"),
    "too many pairs": (["data.n_pairs=5001"], "data.n_pairs=5001 is not allowed: use an integer from 1 to 5000"),
    "batch size 0": (["data.batch_size=0"], "data.batch_size=0 is not allowed: use an integer >= 1"),
    "zero epochs": (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not allowed: use an integer >= 1"),
    "negative lr": (["model.optimizer.lr=-1"], "model.optimizer.lr=-1 is not allowed: use a finite number > 0"),
    "lr not a number": (["model.optimizer.lr=abc"], "model.optimizer.lr='abc' is not allowed: use a finite number > 0"),
    "lr that overflows the weights": (["model.optimizer._target_=torch.optim.SGD", "model.optimizer.lr=3e38"],
                                      "the model's loss or weights are not finite after one training step"),
    "infinite lr": (["model.optimizer.lr=inf"], "model.optimizer.lr=inf is not allowed: use a finite number > 0"),
    "zero threads": (["threads=0"], "threads=0 is not allowed: use an integer >= 1"),
    "fuse_seeds not a bool": (["-m", "fuse_seeds=sometimes"], "fuse_seeds='sometimes' is not allowed: use fuse_seeds="),
    "accel not a bool in a sweep": (["-m", "accel=maybe", "seed=0,1"], "accel='maybe' is not allowed: use accel=true"),
    "accel not a bool": (["accel=2"], "accel=2 is not allowed: use accel=true"),
    "data_dir under a file": (["data.data_dir={tmp}/file/data"], "cannot be created or written"),
    "corrupted MNIST file": (["data.data_dir={tmp}/corrupt"], "train-labels-idx1-ubyte has SHA-256"),
    "bad aux inside a sweep": (
        ["-m", "aux=0,0.5,2", "seed=0,1"], "job `aux=2 seed=0 trainer=fast_dev_run`: aux=2 is not allowed"),
    "bad lr inside a sweep": (["-m", "model.optimizer.lr=0.001,-1"], "model.optimizer.lr=-1 is not allowed"),
    "the same run twice in a sweep": (["-m", "aux=0,0.0"], "are the same run (same resolved config)"),
    "selection without validation pairs": (
        ["callbacks=best_on_val"], "callbacks monitor val/loss but data.val_pairs=0: hold out validation pairs"),
    "a key the program does not read": (["aux_weight=0.5"], "aux_weight is not a setting this program reads: "
                                                           "did you mean aux?"),
    "an added key the program does not read": (["+aux_weight=0.5"], "aux_weight is not a setting this program "
                                                                    "reads: did you mean aux?"),
    "an optimiser argument that does not exist": (
        ["+model.optimizer.momentum=0.9"], "unexpected keyword argument 'momentum'"),
    "a _target_ that does not import": (
        ["arch.pipe._target_=mylab.nets.tiny"], "arch.pipe._target_=mylab.nets.tiny cannot be imported"),
    "a misspelt group option": (["callbacks=best_on_vall"], "callbacks=best_on_vall is unknown: use one of"),
}


# Imports the entry point once, then runs each case's command line through `cli` in a forked
# child whose stdout and stderr are files, and which ends as the command does (its SystemExit,
# then the interpreter's shutdown: loky's resource tracker reports leaked locks otherwise);
# prints the exit statuses as one JSON line. A case still running after 120 s is stopped by
# SIGALRM (exit status -14).
FORKING_RUNNER = """
import json, os, signal, sys

import mnist_compare.train as entry
from mnist_compare.cli import cli

cases = json.loads(sys.stdin.read())
codes, running = [None] * len(cases), {}


def start(i, case):
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        running[pid] = i
        return
    signal.alarm(120)
    for fd, suffix in ((1, ".out"), (2, ".err")):
        opened = os.open(case["out"] + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = [entry.__file__, *case["argv"]]
    cli(entry.main)  # its SystemExit ends the child as it ends the command: interpreter shutdown, atexit
    raise SystemExit(0)


def reap():
    pid, status = os.wait()
    codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)


for i, case in enumerate(cases):
    if len(running) == 2:  # the two cores
        reap()
    start(i, case)
while running:
    reap()
print(json.dumps(codes))
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, mnist_dir):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "file").write_text("")
    raw = mnist.raw_dir(tmp / "corrupt")
    shutil.copytree(mnist.raw_dir(mnist_dir), raw, ignore=shutil.ignore_patterns(".*"))
    (raw / "train-labels-idx1-ubyte").write_bytes(b"\0" * 60008)

    cases = []
    for i, (name, (args, _)) in enumerate(CASES.items()):
        args = [a.format(tmp=tmp) for a in args]
        where = tmp / "runs" / name.replace(" ", "_")
        key = "hydra.sweep.dir" if "-m" in args else "hydra.run.dir"
        cases.append({"argv": [*args, "trainer=fast_dev_run", f"{key}={where}"], "out": str(tmp / f"case{i}")})
    server = subprocess.run([sys.executable, "-c", FORKING_RUNNER], input=json.dumps(cases), cwd=ROOT,
                            capture_output=True, text=True, timeout=600, check=False)
    assert server.returncode == 0, server.stderr[-3000:]
    codes = json.loads(server.stdout.splitlines()[-1])
    return {name: (SimpleNamespace(returncode=code, stdout=Path(f"{case['out']}.out").read_text(),
                                   stderr=Path(f"{case['out']}.err").read_text()),
                   tmp / "runs" / name.replace(" ", "_"))
            for name, case, code in zip(CASES, cases, codes, strict=True)}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line_exit_2_and_no_folder(outcomes, name):
    done, where = outcomes[name]
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and CASES[name][1] in lines[0], lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not where.exists(), f"{name} left {sorted(p.name for p in where.rglob('*'))}"


@pytest.mark.parametrize("name", ["a space after a comma in a sweep", "an unclosed range"])
def test_grammar_errors_are_ours_not_a_link_to_hydras_docs(outcomes, name):
    done, _ = outcomes[name]
    assert "hydra.cc" not in done.stderr and "Error parsing override" not in done.stderr, done.stderr


def test_a_forked_case_answers_as_the_real_command(outcomes, tmp_path):
    """The forked cases stand for `python -m mnist_compare.train ...`: one sweep case, as that."""
    args, _ = CASES["bad aux inside a sweep"]
    real = run_cli("mnist_compare.train", *args, "trainer=fast_dev_run", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    forked, _ = outcomes["bad aux inside a sweep"]
    assert (real.returncode, real.stderr) == (forked.returncode, forked.stderr)
    assert "checking the settings of 6 jobs" in real.stdout and "checking the settings of 6 jobs" in forked.stdout
    assert not (tmp_path / "sweep").exists()


def test_valid_sweep_syntax_and_logger_null_are_accepted(tmp_path, mnist_dir):
    sweep = tmp_path / "choice"
    done = run_cli("mnist_compare.train", "-m", "arch=choice(shallow,conv)", "logger=null,tensorboard",
                   "trainer.max_epochs=1", "data.n_pairs=100", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == [
        f"arch={a},data.n_pairs=100,logger={g},trainer.max_epochs=1" for a in ("conv", "shallow")
        for g in ("none", "tensorboard")]
    assert not list(sweep.glob("*logger=none*/tb")) and len(list(sweep.glob("*logger=tensorboard*/tb"))) == 2


def test_collector_on_a_directory_without_runs(tmp_path):
    for target in (tmp_path, tmp_path / "absent"):
        done = run_cli("mnist_compare.collect", str(target))
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
