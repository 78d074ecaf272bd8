"""Which code and libraries made a result: recorded in every metrics.json, checked on resume."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import mnist_compare
from mnist_compare.paths import CONF_DIR

PACKAGE_DIR = Path(mnist_compare.__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """Hash of the package's Python files and configs: equal code gives equal numbers, whatever
    the git state (a README edit does not change it, an uncommitted code edit does)."""
    digest = hashlib.sha256()
    for base, pattern in ((PACKAGE_DIR, "*.py"), (CONF_DIR, "*.yaml")):
        for path in sorted(base.rglob(pattern)):
            if "__pycache__" in path.parts:
                continue
            digest.update(f"{path.relative_to(base).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE_DIR.parent), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """Package version, source hash, and the git commit and dirty flag when run from a checkout."""
    top = _git("rev-parse", "--show-toplevel")
    in_checkout = top is not None and Path(top).resolve() == PACKAGE_DIR.parent
    status = _git("status", "--porcelain", "--untracked-files=no") if in_checkout else None
    return {
        "version": mnist_compare.__version__,
        "source_hash": source_hash(),
        "commit": _git("rev-parse", "HEAD") if in_checkout else None,
        "dirty": bool(status) if status is not None else None,
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("torch", "pytorch_lightning", "hydra-core", "omegaconf", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions
