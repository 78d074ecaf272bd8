"""Which code and libraries made a result: recorded in every metrics.json, checked on resume."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.abc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import sysconfig
from importlib import metadata
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import torch

import mnist_compare
from mnist_compare.errors import UserError
from mnist_compare.paths import CONF_DIR
from mnist_compare.run import progress
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


# Installed code (its version is the package's), and the interpreter's own modules.
_INSTALLED = tuple(Path(p).resolve() for k, p in sysconfig.get_paths().items()
                   if k in ("stdlib", "platstdlib", "purelib", "platlib"))


def _user_files(spec: ModuleSpec | None) -> list[tuple[Path, Path]] | None:
    """(base, file) of every Python file of a top-level module of the user's own: a package,
    a namespace package (a folder without `__init__.py`: its locations) or a single file; None
    for installed code, the standard library and what is not a Python source."""
    if spec is None:
        return None
    if spec.submodule_search_locations is not None:
        roots = [Path(p).resolve() for p in spec.submodule_search_locations]
    elif spec.origin and spec.origin.endswith(".py"):
        roots = [Path(spec.origin).resolve()]
    else:
        return None
    if not roots or any(r == i or i in r.parents for r in roots for i in _INSTALLED) or any(
            part in ("site-packages", "dist-packages") for r in roots for part in r.parts):
        return None
    files = []
    for root in roots:
        if root.is_file():
            files.append((root.parent, root))
        else:
            files += [(root, f) for f in sorted(root.rglob("*.py")) if "__pycache__" not in f.relative_to(root).parts]
    return files


# Top-level user module -> hash of its files when this process imported it (`_SnapshotOnImport`):
# the code that runs, whatever the disk holds later.
IMPORTED: dict[str, str] = {}
_NOT_USER: set[str] = set()


class _SnapshotOnImport(importlib.abc.MetaPathFinder):
    """Hashes a user's top-level module (package, namespace package or file) just before Python
    imports it: a sweep's worker keeps running the code it imported, while the files on disk
    may be edited meanwhile (a run would otherwise record the edit and compute with the old code)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if "." in name or name in _NOT_USER or name in sys.stdlib_module_names:  # (again on a reload)
            return None
        try:
            spec = next((s for f in sys.meta_path if f is not self and hasattr(f, "find_spec")
                         and (s := f.find_spec(name, path, target)) is not None), None)
            files = _user_files(spec)
            if files is None and spec is not None:
                _NOT_USER.add(name)
            elif files is not None:
                IMPORTED[name] = _hash_files(files)
        except Exception:  # never stands in an import's way: the module is then hashed from the disk
            pass
        return None  # the import itself goes on as ever


if not any(isinstance(f, _SnapshotOnImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _SnapshotOnImport())


def user_modules(config: dict[str, Any]) -> dict[str, str]:
    """Hash of each module of the user's own named by a `_target_` (e.g. `mylab`), as this process
    imported it: its code makes the numbers as much as ours does. Refuses (UserError) when the
    files on disk differ from what was imported: a run would mix the two."""
    out = {}
    for top in sorted({t.split(".")[0] for _, t in targets(config)} - set(LIBRARIES)):
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        files = _user_files(spec)
        if files is None:
            continue
        on_disk = _hash_files(files)
        imported = IMPORTED.get(top) if top in sys.modules else None
        if imported is not None and imported != on_disk:
            where = files[0][0] if files else top
            raise UserError(f"{top} ({where}) changed on disk after this process imported it: a run now would record "
                            "one code and compute with the other; launch again (a new hydra.sweep.dir=..., or "
                            "restore the code to resume)")
        out[top] = imported or on_disk
    return out


def launched_code() -> dict[str, Any] | None:
    """The code the sweep this job belongs to was checked with (`progress.announce`), or None."""
    with contextlib.suppress(KeyError, ValueError, AttributeError):
        return json.loads(os.environ[progress.ENV]).get("code")
    return None


def same_code(code: dict[str, Any], launched: dict[str, Any] | None) -> None:
    """A sweep's job runs the code its launch was checked with (`launched`, stated by the
    launching process): refuses one that imported edited code, which would mix code in one sweep."""
    if not launched:
        return
    changed = [f"{k} {launched[k]} -> {code.get(k)}" for k in ("source_hash",) if launched.get(k) != code.get(k)]
    mine, theirs = code.get("user_modules") or {}, launched.get("user_modules") or {}
    changed += [f"{top} {theirs[top]} -> {h}" for top, h in mine.items() if top in theirs and theirs[top] != h]
    if changed:
        raise UserError(f"the code changed after this sweep was launched ({'; '.join(changed)}): its runs would "
                        "mix two codes; restore it, or launch again into a new hydra.sweep.dir=...")


def code_version(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Package version, source hash, the git commit and dirty flag when run from a checkout,
    and the user's own packages named by the config; taken when a run starts."""
    return {**_checkout(), "user_modules": user_modules(config or {})}


def machine() -> dict[str, Any]:
    """What computes a run's numbers besides its code: the CPU model and the kernels ATen chose
    for it (AVX2, AVX512, ...: `ATEN_CPU_CAPABILITY` can choose another). Not part of a run's
    identity; the collector says when one group mixes them."""
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return {"cpu": cpu_model(), "cpu_capability": capability() if capability else None}


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, macOS's sysctl), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model", "Processor") and value.strip():
                return value.strip()
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=10, check=False)
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
    return platform.processor() or platform.machine()


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


source_hash()  # at import, with the package's modules: the code this process runs, whatever the disk holds later
