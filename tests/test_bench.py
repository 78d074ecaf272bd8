"""The benchmarks: the layer timing counts what it times; the prepared GPU benchmark refuses what it
cannot do with one line and exit status 2."""

from __future__ import annotations

import argparse

import pytest
import torch
from conftest import run_cli

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


def test_gpu_benchmark_commands_compose_on_any_machine(tmp_path):
    """Each command the GPU benchmark will run parses and composes (the first job of a sweep),
    output folders with `=` and `,` in their names included: a GPU session is too short to find
    a typo there."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mnist_compare.paths import CONF_DIR

    out = tmp_path / "gpu=1,a"
    steps = bench.gpu_steps(out, seeds=10)
    assert {"placement", "table1", "default-1", "default-2", "deterministic-1", "deterministic-2"} == set(steps)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for name, (overrides, folder, sweep) in steps.items():
            command = bench.train_command(overrides, folder, sweep=sweep, jobs=8)
            args = command[command.index("mnist_compare.train") + 1:]
            args = [a for a in args if a != "-m"]
            (first, *_), = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
            cfg = compose("train", list(first), return_hydra_config=True)
            where = cfg.hydra.sweep.dir if sweep else cfg.hydra.run.dir
            assert where == str(folder), name
            assert cfg.trainer.get("deterministic", False) is name.startswith("deterministic"), name
    assert [o for o in steps["table1"][0] if o.startswith("trainer.")] == ["trainer.accelerator=gpu"]


def test_bench_refuses_a_count_below_one():
    done = run_cli("mnist_compare.bench", "sweep", "--seeds", "0")
    assert done.returncode == 2 and "0 is not a positive whole number" in done.stderr and not done.stdout


def test_layer_benchmark_times_every_pass_of_every_convolution(capsys):
    threads = torch.get_num_threads()
    try:
        bench.bench_layers(argparse.Namespace(repeats=1, threads=1, overrides=["arch.pipe.channels_last=false"]))
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if line.startswith("conv ")]
    assert [r[1] for r in rows] == ["1->16", "16->32", "32->64", "64->64"]  # the study's ConvNet
    assert rows[1][4] == "200x16x14x14"  # one training batch, WS on: 200 digits
    # the FLOPs counted per layer add up to the ConvNet's convolutions (its pipe less the linear layers)
    pipe = instantiate_conv_pipe()
    convs = bench.conv_flops_per_image(pipe) - 2 * (64 * 100 + 100 * 10)
    assert sum(float(r[5]) for r in rows) * 1e6 / 200 == pytest.approx(convs, rel=1e-3)
    assert rows[0][-3] == "-" and all(r[-3] != "-" for r in rows[1:])  # no input gradient for the image
    assert "contiguous" in out[-1]


def instantiate_conv_pipe():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from mnist_compare.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return instantiate(compose("train", ["arch=conv"]).model.pipe)
