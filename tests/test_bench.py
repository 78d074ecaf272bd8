"""The prepared GPU benchmark refuses what it cannot do with one line and exit status 2."""

from __future__ import annotations

import argparse

import pytest
import torch

from mnist_compare import bench


def gpu_args(out) -> argparse.Namespace:
    return argparse.Namespace(out=str(out), jobs=8, seeds=10)


def test_gpu_benchmark_without_a_gpu_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        bench.bench_gpu(gpu_args(tmp_path / "gpu"))
    assert stop.value.code == 2 and not (tmp_path / "gpu").exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU is visible" in err


def test_gpu_benchmark_never_writes_into_earlier_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "summary.txt").write_text("earlier figures\n")
    with pytest.raises(SystemExit) as stop:
        bench.bench_gpu(gpu_args(tmp_path / "gpu"))
    assert stop.value.code == 2 and "is not empty" in capsys.readouterr().err
    assert (tmp_path / "gpu" / "summary.txt").read_text() == "earlier figures\n"
