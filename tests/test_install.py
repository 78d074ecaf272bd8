"""`pip install .` (not editable, as from a git URL) ships its configs and its Hydra plugins; runs and
sweeps work from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow  # a pip install


def test_a_plain_install_runs_from_another_folder(tmp_path, mnist_dir):
    target, elsewhere, source = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "source"
    elsewhere.mkdir()
    # a copy of the sources, so that the build's own folders never land in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "multirun", "outputs", "build",
                                                                "*.egg-info", "__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--target", str(target), str(source)], capture_output=True, text=True, check=False,
                           timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    assert (target / "mnist_compare" / "conf" / "train.yaml").is_file()
    assert (target / "mnist_compare" / "collect" / "report_2019.csv").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-m", "mnist_compare.train", "arch=conv", "trainer=fast_dev_run"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (metrics,) = elsewhere.glob("outputs/*/*/metrics.json")
    record = json.loads(metrics.read_text())
    assert record["arch"] == "conv" and record["code"]["commit"] is None  # not run from a checkout
    # a sweep through the checked sweeper and the parallel launcher, which Hydra's scan now finds too
    assert (target / "hydra_plugins" / "mnist_compare_launch" / "plugins.py").is_file()
    done = subprocess.run([sys.executable, "-m", "mnist_compare.train", "-m", "arch=shallow", "seed=0,1",
                           "trainer=fast_dev_run"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # both jobs, composed before the launch and run by two workers, in the launch's one dated folder
    (sweep,) = elsewhere.glob("multirun/*/*")
    assert sorted(json.loads(p.read_text())["seed"] for p in sweep.glob("*/metrics.json")) == [0, 1]
