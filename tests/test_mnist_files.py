"""The MNIST files: digests, sources, and clear errors."""

from __future__ import annotations

import shutil

import pytest

from mnist_compare.data import mnist
from mnist_compare.errors import UserError


@pytest.fixture
def copied(tmp_path, mnist_dir):
    """A private data_dir holding a copy of the verified raw files."""
    raw = mnist.raw_dir(tmp_path)
    shutil.copytree(mnist.raw_dir(mnist_dir), raw, ignore=shutil.ignore_patterns(".*"))
    return tmp_path


def test_verified_files_are_used_without_fetching(copied, monkeypatch):
    monkeypatch.setattr(mnist, "SOURCES", [])
    assert (mnist.prepare_pooled(copied)).exists()


def test_corrupted_file_is_rejected_by_name_and_never_used(copied, monkeypatch):
    monkeypatch.setattr(mnist, "SOURCES", [])
    target = mnist.raw_dir(copied) / "t10k-labels-idx1-ubyte"
    data = bytearray(target.read_bytes())
    data[100] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte has SHA-256"):
        mnist.prepare_pooled(copied)
    assert not (copied / "MNIST" / mnist.POOLED_NAME).exists()


def test_bad_download_is_discarded_then_next_source_used(tmp_path, mnist_dir, monkeypatch):
    def corrupt(dest):
        for name in mnist.SHA256:
            (dest / name).write_bytes(b"not mnist")

    def good(dest):
        for name in mnist.SHA256:
            shutil.copy(mnist.raw_dir(mnist_dir) / name, dest / name)

    monkeypatch.setattr(mnist, "SOURCES", [("corrupt mirror", corrupt), ("good mirror", good)])
    raw = mnist.ensure_raw(tmp_path)
    assert all(mnist.sha256(raw / name) == digest for name, digest in mnist.SHA256.items())


def test_no_source_reachable_says_where_to_put_the_files(tmp_path, monkeypatch):
    def offline(dest):
        raise OSError("network unreachable")

    monkeypatch.setattr(mnist, "SOURCES", [("torchvision download", offline), ("npm", offline)])
    with pytest.raises(UserError, match=r"place the four uncompressed IDX files .* in .*MNIST/raw") as err:
        mnist.ensure_raw(tmp_path)
    assert "\n" not in str(err.value)
    assert not list(mnist.raw_dir(tmp_path).glob("*ubyte"))


def test_data_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot be created or written"):
        mnist.prepare_pooled(blocker / "data")


@pytest.mark.slow
def test_truncated_or_edited_cache_is_rebuilt_from_the_raw_files(copied, monkeypatch):
    monkeypatch.setattr(mnist, "SOURCES", [])
    cache = mnist.prepare_pooled(copied)
    good = mnist._read_cache(cache)
    assert good is not None and good["raw_sha256"] == mnist.SHA256
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])  # truncated
    mnist.load_pooled.cache_clear()
    rebuilt = mnist.load_pooled(str(copied))
    assert all((rebuilt[k] == good[k]).all() for k in mnist.POOLED_KEYS)
    edited = dict(good)
    edited["train_target"] = good["train_target"].clone()
    edited["train_target"][0] += 1  # a cache whose content no longer matches its raw files
    import torch

    torch.save(edited, cache)
    assert mnist._read_cache(cache) is None
    mnist.load_pooled.cache_clear()
    assert (mnist.load_pooled(str(copied))["train_target"] == good["train_target"]).all()
    mnist.load_pooled.cache_clear()


def _npm_registry_answers() -> str | None:
    import subprocess

    if shutil.which("npm") is None:
        return "npm is not installed"
    try:
        done = subprocess.run(["npm", "view", mnist.NPM_PACKAGE, "version"], capture_output=True, text=True,
                              timeout=60, check=False)
    except subprocess.TimeoutExpired:  # a network that drops packets rather than refusing them
        return "the npm registry does not answer within 60 s"
    return None if done.returncode == 0 else f"the npm registry does not answer ({done.stderr.strip()[:80]})"


@pytest.mark.slow
def test_the_real_npm_fetcher_delivers_the_verified_files(tmp_path):
    why = _npm_registry_answers()
    if why:
        pytest.skip(why)
    mnist._from_npm(tmp_path)
    assert not mnist._bad_digests(tmp_path)
    assert all((tmp_path / name).exists() for name in mnist.SHA256)
