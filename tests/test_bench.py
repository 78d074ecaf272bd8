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


@pytest.mark.slow
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


@pytest.mark.slow
def test_bench_refuses_a_count_below_one():
    done = run_cli("mnist_compare.bench", "sweep", "--seeds", "0")
    assert done.returncode == 2 and "0 is not a positive whole number" in done.stderr and not done.stdout


@pytest.fixture
def keep_threads():
    """`bench layers` sets torch's thread count, as a benchmark should; not for the tests after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_layer_benchmark_counts_and_rates_every_pass_of_every_convolution(capsys, monkeypatch, keep_threads):
    """Timings stood in for (forward 1 ms, + weight gradient 3 ms, + input gradient 6 ms), so that
    the FLOPs and the rates printed can be checked exactly."""
    times = iter([1.0, 3.0] + [1.0, 3.0, 6.0] * 3)
    monkeypatch.setattr(bench, "timed_ms", lambda step, repeats: next(times))
    monkeypatch.setattr(bench, "matmul_gflops", lambda: 100.0)
    bench.bench_layers(argparse.Namespace(repeats=1, threads=1, overrides=["arch.pipe.channels_last=false"]))
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if line.startswith("conv ")]
    assert [r[1] for r in rows] == ["1->16", "16->32", "32->64", "64->64"]  # the study's ConvNet
    assert rows[1][4] == "200x16x14x14"  # one training batch, WS on: 200 digits
    # 2 x taps: 16x196 outputs x 1x9, 32x144 x 16x9, 64x36 x 32x9, 64x16 x 64x9, per digit
    per_digit = [2 * 16 * 196 * 9, 2 * 32 * 144 * 144, 2 * 64 * 36 * 288, 2 * 64 * 16 * 576]
    assert [float(r[5]) for r in rows] == [round(f * 200 / 1e6, 1) for f in per_digit]
    # GFLOP/s = MFLOP / ms: forward over 1 ms, the weight gradient over 2 ms, the input gradient over 3 ms
    first = [float(v.rstrip(",")) for v in rows[0][-2:]]
    assert rows[0][-3] == "-" and first == pytest.approx([per_digit[0] * 200 / 1e6, per_digit[0] * 200 / 2e6], abs=0.05)
    for row, flops in zip(rows[1:], per_digit[1:], strict=True):  # rates printed to 0.1
        mflop = flops * 200 / 1e6
        assert [float(v.rstrip(",")) for v in row[-3:]] == pytest.approx([mflop, mflop / 2, mflop / 3], abs=0.05)
    assert "contiguous" in out[-1]


def test_layer_benchmark_refuses_a_pipe_without_convolutions(capsys, keep_threads):
    with pytest.raises(SystemExit) as stop:
        bench.bench_layers(argparse.Namespace(repeats=1, threads=1, overrides=["arch=shallow"]))
    assert stop.value.code == 2 and "no convolution" in capsys.readouterr().err


@pytest.mark.slow
def test_run_benchmark_times_the_batched_cell_of_an_mlp_only(capsys, monkeypatch, keep_threads, mnist_dir):
    """A sweep's MLP runs train in batched cells, its ConvNet runs alone: `bench runs` times each
    architecture's runs the way a sweep trains them."""
    monkeypatch.setattr(bench, "matmul_gflops", lambda: 100.0)
    bench.bench_runs(argparse.Namespace(arch=["conv", "shallow"], repeats=1, epochs=1, threads=1, seeds=2,
                                        peak_gflops_per_core=83.0))
    out = capsys.readouterr().out
    assert out.count("in a sweep, 2 seeds batched") == 1
    shallow = out[out.index("shallow"):]
    assert "in a sweep, 2 seeds batched" in shallow and "ratio to the raw loop" in shallow


def test_bench_sweep_runs_the_users_launcher_which_batches_even_one_job_at_a_time(tmp_path):
    """`bench sweep --jobs 1` timed hydra/launcher=basic, which trains every run alone, while a
    user's sweep (hydra/launcher=parallel, any n_jobs) trains an MLP cell's seeds as one model."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from hydra_plugins.mnist_compare_launch.plugins import joblib_settings
    from mnist_compare.accel.launch import seed_cells
    from mnist_compare.paths import CONF_DIR

    command = bench.train_command([*bench.TABLE1, "seed=range(10)"], tmp_path / "sweep", sweep=True, jobs=1)
    args = [a for a in command[command.index("mnist_compare.train") + 1:] if a != "-m"]
    (runs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):  # the first cell: shallow, its ten seeds
        cfgs = [compose("train", list(run), return_hydra_config=True) for run in runs[:10]]
    launcher = OmegaConf.to_container(cfgs[0].hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.mnist_compare_launch.plugins.ParallelLauncher"
    assert launcher["n_jobs"] == 1
    tasks = seed_cells([(i, list(run), cfg) for i, (run, cfg) in enumerate(zip(runs, cfgs, strict=False))],
                       joblib_settings(launcher))
    assert max(len(task) for task in tasks) > 1, "no cell batched"
