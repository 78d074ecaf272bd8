"""Shared helpers: the real MNIST cache, and running the CLI as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The files that take longest, longest first (`pytest --durations=0` summed per file): each runs
# whole on one of the two workers (`--dist loadfile`), so starting them first lets both workers
# end together rather than one running the SLURM tests alone at the end.
SLOWEST_FIRST = ("test_slurm.py", "test_train.py", "test_resume.py", "test_extending.py", "test_fused.py",
                 "test_bad_input.py", "test_collect.py", "test_install.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if "MUTANT_UNDER_TEST" in os.environ:  # mutation testing stops at the first failure: fastest first
        stats = ROOT / "mutmut-stats.json"  # mutmut's record of each test's duration, in its mutants/ copy
        seconds = json.loads(stats.read_text())["duration_by_test"] if stats.exists() else {}
        items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))
        return
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_FIRST)))  # stable: a file keeps its order


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The user's data directory, fetched once (tests share it, like a sweep's jobs do)."""
    from mnist_compare.data.mnist import default_data_dir, prepare_pooled

    prepare_pooled(default_data_dir())
    return default_data_dir()


def run_cli(module: str, *args: str, cwd: Path = ROOT, env: dict | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m <module> args...` in a subprocess, with its output captured."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def train(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("mnist_compare.train", *args, **kwargs)


def hooked_pythonpath(folder: Path, code: str) -> str:
    """A PYTHONPATH whose `sitecustomize.py` (`code`, written to `folder`) every Python process
    started with it runs first: how tests watch or hold a sweep's workers and SLURM jobs."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    return os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
