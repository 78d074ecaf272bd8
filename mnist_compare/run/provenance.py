"""Which code and libraries made a result: recorded in every metrics.json, checked on resume."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import mnist_compare
from mnist_compare.paths import CONF_DIR
from mnist_compare.run.identity import targets

PACKAGE_DIR = Path(mnist_compare.__file__).resolve().parent


def _hash_files(files: list[tuple[Path, Path]]) -> str:
    """Hash of (base, path) files: each relative path and content, so that a rename counts."""
    digest = hashlib.sha256()
    for base, path in files:
        digest.update(f"{path.relative_to(base).as_posix()}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """Hash of the package's Python files and configs: equal code gives equal numbers, whatever
    the git state (a README edit does not change it, an uncommitted code edit does)."""
    return _hash_files([(base, p) for base, pattern in ((PACKAGE_DIR, "*.py"), (CONF_DIR, "*.yaml"))
                        for p in sorted(base.rglob(pattern)) if "__pycache__" not in p.parts])


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE_DIR.parent), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# `_target_` modules that are not the user's own code (their versions are in `versions`).
LIBRARIES = ("mnist_compare", "torch", "torchvision", "pytorch_lightning", "lightning", "hydra", "omegaconf",
             "builtins", "functools")


def user_modules(config: dict[str, Any]) -> dict[str, str]:
    """Hash of each package of the user's own named by a `_target_` (e.g. `mylab`): its code
    makes the numbers as much as ours does."""
    out = {}
    for top in sorted({t.split(".")[0] for _, t in targets(config)} - set(LIBRARIES)):
        spec = importlib.util.find_spec(top)
        if spec is None or spec.origin in (None, "built-in", "frozen") or "site-packages" in str(spec.origin):
            continue
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        out[top] = _hash_files([(origin.parent, f) for f in files])
    return out


def code_version(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Package version, source hash, the git commit and dirty flag when run from a checkout,
    and the user's own packages named by the config; taken when a run starts."""
    return {**_checkout(), "user_modules": user_modules(config or {})}


@functools.lru_cache(maxsize=1)
def _checkout() -> dict[str, Any]:
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
    for key, dist in (("torch", "torch"), ("pytorch_lightning", "pytorch_lightning"), ("hydra", "hydra-core"),
                      ("omegaconf", "omegaconf"), ("numpy", "numpy")):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[key] = metadata.version(dist)
    return versions


def fingerprint(code: dict[str, Any] | None, versions: dict[str, Any] | None) -> tuple:
    """What must be equal for two results to share a sweep folder: our code, the user's own
    code, and the libraries that compute (torch, Lightning)."""
    code, versions = code or {}, versions or {}
    return (code.get("source_hash"), tuple(sorted((code.get("user_modules") or {}).items())),
            versions.get("torch"), versions.get("pytorch_lightning"))
