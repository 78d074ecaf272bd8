"""Benchmarks: our Lightning training path against a minimal raw PyTorch loop doing the same work.

    python -m mnist_compare.bench runs  [--arch shallow deep conv] [--repeats 5] [--threads 1] [--seeds 10]
    python -m mnist_compare.bench layers [--repeats 30] [--threads 1] [override ...]
    python -m mnist_compare.bench sweep [--jobs CORES] [--seeds 10] [override ...]
    python -m mnist_compare.bench progress [SWEEP_DIR]
    python -m mnist_compare.bench gpu   [--jobs 8] [--out gpu-benchmark] [--cpu-results DIR]

`runs` alternates, in one process, the real path (`mnist_compare.run.fit.fit`: Trainer, data
module, TensorBoard logging) and the raw loop on the same seed, and prints the medians and
their ratio; for an MLP also the path its runs take in a sweep, `--seeds` seeds batched into one
model (`mnist_compare.accel.fused`, each record written), per run. `layers` times each
convolution of the study's ConvNet pipe alone on one training batch (WS on: 200 digits):
forward, then with its weight gradient, then with its input gradient too, against a large matrix
product on the same thread(s): where the ConvNet's time goes, pass by pass. `sweep`
times the whole Table-1 sweep as a user runs it (extra overrides, e.g.
trainer.precision=bf16-mixed, are passed on). `progress` times the progress line on a finished
sweep. `gpu` is the prepared GPU benchmark: the fast_dev_run sweep with `accelerator=auto`
(every run must land on the GPU), the whole Table-1 study on the GPU with `--jobs` runs at a
time, its Table 1 paired with the published CPU one, and a ConvNet run repeated with default
settings and with `+trainer.deterministic=true`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_compare.accel import fused
from mnist_compare.accel.allocator import keep_freed_memory
from mnist_compare.accel.cuda_probe import skip_nvml_probe
from mnist_compare.accel.fused import fusable, plain_mlps
from mnist_compare.data import generate_pair_sets
from mnist_compare.models.module import counts, mixed_loss
from mnist_compare.models.nets import PairNet
from mnist_compare.paths import CONF_DIR
from mnist_compare.run import progress
from mnist_compare.run.fit import fit, replay
from mnist_compare.run.identity import identity_config, run_id


def conv_flops(conv: torch.nn.Conv2d, output_numel: int) -> float:
    """Forward multiply-adds x 2 of a convolution that produced `output_numel` values, every tap
    counted, those on the zero padding too (the usual nominal count)."""
    return 2 * output_numel * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]


def conv_flops_per_image(pipe: torch.nn.Module) -> float:
    """Forward multiply-adds x 2 of the convs and linears of one pipe on one 14x14 digit."""
    flops = 0.0

    def hook(module: torch.nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal flops
        if isinstance(module, torch.nn.Conv2d):
            flops += conv_flops(module, output[0].numel())
        elif isinstance(module, torch.nn.Linear):
            flops += 2 * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in pipe.modules()]
    with torch.no_grad():
        pipe(torch.zeros(1, 1, 14, 14))
    for h in handles:
        h.remove()
    return flops


def cpu_clock_ghz() -> tuple[float, str]:
    """The nominal (base) clock where the kernel exposes it; else the clock /proc/cpuinfo reports
    now, said as such (on a VM without cpufreq, as here, it is the hypervisor's fixed figure)."""
    base = Path("/sys/devices/system/cpu/cpu0/cpufreq/base_frequency")
    try:
        return int(base.read_text()) / 1e6, "nominal clock (cpufreq base_frequency)"
    except (OSError, ValueError):
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
        mhz = float(next(line.split(":")[1] for line in text.splitlines() if line.startswith("cpu MHz")))
    except (OSError, StopIteration, ValueError):
        return float("nan"), "unknown clock"
    return mhz / 1000, "clock reported by /proc/cpuinfo (no nominal clock exposed)"


def cpu_peak_gflops_per_core() -> float:
    """Clock x 32 fp32 FLOP per cycle (two 256-bit FMA units x 8 lanes x 2 FLOP)."""
    return cpu_clock_ghz()[0] * 32


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """A large fp32 matrix product's rate on this process's threads: the measured counterpart of
    the nominal peak, which assumes a clock that a VM may not report truthfully (boost)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


def raw_loop(cfg: DictConfig) -> float:
    """The same training as the Lightning path, in plain PyTorch; returns the final test accuracy."""
    torch.manual_seed(cfg.seed)
    net = PairNet(partial(instantiate, cfg.model.pipe), instantiate(cfg.model.classifier), cfg.ws)
    tr_x, tr_y, tr_c, te_x, te_y, te_c = generate_pair_sets(cfg.data.n_pairs, cfg.seed, cfg.data.data_dir)
    optimizer = instantiate(cfg.model.optimizer)(net.parameters())
    bs, w = cfg.data.batch_size, float(cfg.aux)
    history = []
    for _ in range(cfg.trainer.max_epochs):
        net.train()
        sums = []
        for start in range(0, tr_x.size(0), bs):
            x, y, c = tr_x[start : start + bs], tr_y[start : start + bs], tr_c[start : start + bs]
            outputs = net(x)
            loss = mixed_loss(outputs, y, c, w)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                sums.append(torch.cat((loss.view(1) * y.numel(), counts(outputs, y, c))))
        torch.stack(sums).sum(0).tolist()
        net.eval()
        with torch.no_grad():
            outputs = net(te_x)
            torch.nn.functional.cross_entropy(outputs[0], te_y).item()
            history.append(counts(outputs, te_y, te_c).tolist()[0] / te_y.numel())
    return history[-1]


def batched_cell(cfgs: list[DictConfig]) -> float:
    """A sweep's batched cell (`accel/fused.py`), its records written as the jobs write them;
    returns seed 0's test accuracy."""
    trained = fused.train_cell(cfgs, Path("/nonexistent"))
    if len(trained) != len(cfgs):
        raise SystemExit("the cell's seeds were not batched: see the log above")
    with tempfile.TemporaryDirectory() as out:
        records = [replay(cfg, Path(out) / str(cfg.seed), trained[run_id(identity_config(cfg))]) for cfg in cfgs]
    return records[0]["test_acc"]


def bench_runs(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as every job of the command does (accel): both paths get the same allocator
    skip_nvml_probe()  # and the same per-step CUDA probe, as cheap as in a process without Lightning
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for arch in args.arch:
            cfg = compose("train", [f"arch={arch}", "ws=true", "aux=0.5", "seed=0",
                                    f"trainer.max_epochs={args.epochs}", f"threads={args.threads}"])
            generate_pair_sets(cfg.data.n_pairs, 0, cfg.data.data_dir)  # data preparation is not timed
            cell = [compose("train", [f"arch={arch}", "ws=true", "aux=0.5", f"seed={seed}",
                                      f"trainer.max_epochs={args.epochs}", f"threads={args.threads}"])
                    for seed in range(args.seeds)] if args.seeds > 1 and fusable(cfg) and plain_mlps(cfg) else []
            paths = ("lightning", "raw", "batched") if cell else ("lightning", "raw")
            times: dict[str, list[float]] = {path: [] for path in paths}
            accs: dict[str, float] = {}
            for _ in range(args.repeats):
                for path in paths:
                    started = time.perf_counter()
                    if path == "raw":
                        accs[path] = raw_loop(cfg)
                    elif path == "lightning":
                        with tempfile.TemporaryDirectory() as out:
                            accs[path] = fit(cfg, Path(out))["test_acc"]
                    else:  # what a sweep's worker does with the cell: trained together, each record written
                        accs[path] = batched_cell(cell)
                    times[path].append(time.perf_counter() - started)
            lightning, raw = statistics.median(times["lightning"]), statistics.median(times["raw"])
            line = (f"{arch:8s} lightning {lightning:7.2f} s   raw {raw:7.2f} s   ratio {lightning / raw:5.3f}"
                    f"   test_acc lightning {accs['lightning']:.4f} raw {accs['raw']:.4f}")
            if cell:
                per_run = statistics.median(times["batched"]) / len(cell)
                line += (f"\n{'':8s} in a sweep, {len(cell)} seeds batched: {per_run:7.2f} s a run, ratio to the raw "
                         f"loop {per_run / raw:5.3f}   test_acc seed 0 {accs['batched']:.4f}")
            if arch == "conv":
                model = instantiate(cfg.model, _recursive_=False)
                per_image = conv_flops_per_image(model.net.pipes[0])
                # per epoch: 2000 training images x (forward + backward = 3 forwards) + 2000 test images
                flops = args.epochs * 2 * cfg.data.n_pairs * per_image * 4
                achieved = flops / lightning / 1e9
                peak = args.peak_gflops_per_core * args.threads
                sgemm = matmul_gflops()
                line += (f"\n{'':8s} {flops / 1e12:.2f} TFLOP per run -> {achieved:.1f} GFLOP/s = "
                         f"{achieved / peak:.0%} of the nominal fp32 peak of {args.threads} core(s) "
                         f"({peak:.0f} GFLOP/s)"
                         f"\n{'':8s} = {achieved / sgemm:.0%} of a 2048x2048 fp32 matrix product on the same "
                         f"thread(s), measured now ({sgemm:.1f} GFLOP/s)")
            print(line, flush=True)
    print(f"# {args.repeats} alternating repeats, medians, {args.epochs} epochs, ws=true aux=0.5 seed=0, "
          f"{args.threads} thread(s), torch {torch.__version__}")


def timed_ms(step: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of `step`, after warm-up calls (oneDNN builds its kernels on first use)."""
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def bench_layers(args: argparse.Namespace) -> None:
    """Each pass of each convolution timed apart: the weight gradient (what every layer needs)
    and the input gradient (what every layer but the first needs) through `torch.autograd.grad`,
    which returns them instead of accumulating them as a training step never does."""
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["arch=conv", *args.overrides])
    pipe = instantiate(cfg.model.pipe)
    if not any(isinstance(m, torch.nn.Conv2d) for m in pipe.modules()):
        refuse("this pipe has no convolution: give settings of the ConvNet's pipe, e.g. arch.pipe.channels_last=false")
    x = torch.zeros(2 * cfg.data.batch_size, 1, 14, 14)  # WS on: both digits of a batch in one call
    sgemm = matmul_gflops()

    def rate(flops: float, ms: float) -> float | None:  # None: the difference of two medians is in the noise
        return flops / ms / 1e6 if ms > 0 and flops / ms / 1e6 < 4 * sgemm else None

    print(f"{'layer':22s} {'input':14s} {'MFLOP':>6s} {'forward':>10s} {'+ weight grad':>14s} {'+ input grad':>13s}"
          f"   GFLOP/s forward, weight grad, input grad (matrix product {sgemm:.1f})")
    first = True
    for layer in pipe:
        if isinstance(layer, torch.nn.Conv2d):
            inp = x.detach().requires_grad_(not first)  # the image needs no gradient
            out = layer(inp)
            grad = torch.ones_like(out)
            flops = conv_flops(layer, out.numel())  # each gradient costs one forward's FLOPs
            weights = [layer.weight, layer.bias]
            forward = timed_ms(lambda: layer(inp), args.repeats)  # noqa: B023 (used in this iteration only)
            weight = timed_ms(lambda: torch.autograd.grad(layer(inp), weights, grad), args.repeats)  # noqa: B023
            rates = [rate(flops, forward), rate(flops, weight - forward)]
            both = None
            if not first:
                both = timed_ms(lambda: torch.autograd.grad(layer(inp), [inp, *weights], grad),  # noqa: B023
                                args.repeats)
                rates.append(rate(flops, both - weight))
            name = f"conv {layer.in_channels}->{layer.out_channels} k{layer.kernel_size[0]} p{layer.padding[0]}"
            cells = f"{forward:7.2f} ms {weight:11.2f} ms " + (f"{both:10.2f} ms" if both else f"{'-':>13s}")
            shown = ", ".join(f"{r:.1f}" if r else "n/a" for r in rates)
            print(f"{name:22s} {'x'.join(map(str, inp.shape)):14s} {flops / 1e6:6.1f} {cells}   {shown}", flush=True)
            first = False
        with torch.no_grad():
            x = layer(x)
    layout = "channels_last" if cfg.model.pipe.get("channels_last", True) else "contiguous"
    print(f"# medians of {args.repeats}, {args.threads} thread(s), {layout}, fp32, torch {torch.__version__}")


TABLE1 = ["arch=shallow,deep,conv", "ws=true,false", "aux=0,0.5"]


def hydra_value(path: Path) -> str:
    """A path as a quoted Hydra override value: `=`, `,` or brackets in it stay part of the path."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def train_command(overrides: list[str], out: Path, sweep: bool, jobs: int = 1) -> list[str]:
    """`python -m mnist_compare.train` as a user would type it, writing into `out`."""
    if not sweep:
        return [sys.executable, "-m", "mnist_compare.train", *overrides, f"hydra.run.dir={hydra_value(out)}"]
    # the user's launcher (hydra/launcher=parallel) at any job count: one job at a time still batches
    # an MLP cell's seeds, as a user's sweep with hydra.launcher.n_jobs=1 does (basic would not)
    return [sys.executable, "-m", "mnist_compare.train", "-m", *overrides, f"hydra.sweep.dir={hydra_value(out)}",
            f"hydra.launcher.n_jobs={jobs}"]


def timed_sweep(out: Path, overrides: list[str], jobs: int) -> tuple[float, list[dict]]:
    """Run a sweep into `out` as a user would; its wall time and its runs' records."""
    cmd = train_command(overrides, out, sweep=True, jobs=jobs)
    print(" ".join(cmd), flush=True)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return wall, [json.loads(p.read_text()) for p in sorted(out.glob("*/metrics.json"))]


def progress_line_cost_ms(sweep_dir: Path, repeats: int = 20) -> float:
    """What the progress suffix costs a job that ends with every result of `sweep_dir` in place."""
    total = sum(1 for _ in sweep_dir.glob("*/*.json"))
    os.environ[progress.ENV] = json.dumps({"total": total, "already": 0, "start": time.time() - 60})
    try:
        started = time.perf_counter()
        for _ in range(repeats):
            progress.line(sweep_dir)
        return (time.perf_counter() - started) / repeats * 1e3
    finally:
        del os.environ[progress.ENV]


def bench_sweep(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as out:
        wall, records = timed_sweep(Path(out), [*TABLE1, f"seed=range({args.seeds})", *args.overrides], args.jobs)
        cost = progress_line_cost_ms(Path(out))
    train = sum(r["train_time_s"] for r in records)
    print(f"sweep: {len(records)} runs in {wall:.0f} s wall ({wall / 60:.1f} min); sum of per-run training times "
          f"{train:.0f} s; {args.jobs} parallel job(s) (hydra/launcher=parallel, as a user's sweep: MLP cells batched "
          f"unless fuse_seeds=false), {os.cpu_count()} cores\n"
          f"progress line: {cost:.2f} ms per job with all {len(records)} results in the folder")


def bench_progress(args: argparse.Namespace) -> None:
    folder = Path(args.sweep_dir)
    if not folder.is_dir():
        refuse(f"{folder} is not a folder: give a sweep folder, e.g. docs/results/table1")
    runs = sum(1 for _ in folder.glob("*/metrics.json"))
    print(f"progress line: {progress_line_cost_ms(folder, 200):.2f} ms per job with {runs} finished runs "
          f"in {folder}")


def refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def gpu_steps(out: Path, seeds: int) -> dict[str, tuple[list[str], Path, bool]]:
    """The benchmark's commands: name -> (overrides, output folder, is a sweep)."""
    repeat = ["arch=conv", "ws=true", "aux=0.5", "seed=0", "trainer.accelerator=gpu"]
    return {
        # the default accelerator=auto, through the parallel launcher: every run must land on the GPU
        "placement": ([*TABLE1, "trainer=fast_dev_run"], out / "fast_dev_run", True),
        # the whole study (accelerator=gpu: its own identity, so it pairs with the CPU runs)
        "table1": ([*TABLE1, f"seed=range({seeds})", "trainer.accelerator=gpu"], out / "table1", True),
        # trainer.deterministic is not in conf/trainer: `+` adds it, and the default runs stay as they are
        **{f"{name}-{i}": (repeat + extra, out / "repeat" / f"{name}-{i}", False)
           for name, extra in (("default", []), ("deterministic", ["+trainer.deterministic=true"]))
           for i in (1, 2)},
    }


def bench_gpu(args: argparse.Namespace) -> None:
    """Everything the GPU figures need, from one command, into `args.out` (summary.txt beside the
    sweeps). No GPU has been lent to this project yet: these figures are not measured."""
    out = Path(args.out)
    if not torch.cuda.is_available():
        refuse("no CUDA GPU is visible here (torch.cuda.is_available() is False): run it on a machine with one")
    if out.exists() and not out.is_dir():
        refuse(f"{out} is a file: give a new --out DIR")
    if out.exists() and any(out.iterdir()):
        refuse(f"{out} is not empty: give a new --out DIR")
    out.mkdir(parents=True, exist_ok=True)
    steps = gpu_steps(out, args.seeds)

    def say(line: str) -> None:  # each figure kept as soon as it is measured
        print(line, flush=True)
        with (out / "summary.txt").open("a") as f:
            f.write(line + "\n")

    say(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"{os.cpu_count()} CPU cores, {args.jobs} runs at a time on the one GPU; 32-true convolutions in TF32: "
        f"{torch.backends.cudnn.allow_tf32} (torch.backends.cudnn.allow_tf32), matrix products: "
        f"{torch.get_float32_matmul_precision()} (torch.get_float32_matmul_precision)")
    overrides, folder, _ = steps["placement"]
    wall, records = timed_sweep(folder, overrides, args.jobs)
    devices = sorted({r["device"] for r in records})
    say(f"fast_dev_run sweep, accelerator=auto: {len(records)} runs in {wall:.0f} s, devices {devices}"
        f" -> {'OK' if devices and all(d.startswith('cuda') for d in devices) else 'NOT ALL ON THE GPU'}")
    overrides, table1, _ = steps["table1"]
    wall, records = timed_sweep(table1, overrides, args.jobs)
    say(f"Table-1 study on the GPU: {len(records)} runs in {wall:.0f} s wall ({wall / 60:.1f} min); "
        f"sum of per-run training times {sum(r['train_time_s'] for r in records):.0f} s")
    collect = [sys.executable, "-m", "mnist_compare.collect"]
    subprocess.run([*collect, str(table1)], check=True, stdout=subprocess.DEVNULL)
    cpu = Path(args.cpu_results)
    if (cpu / "multirun.yaml").is_file():  # each cell's seed-paired difference from the CPU runs
        subprocess.run([*collect, str(cpu), str(table1), "--out", str(out / "gpu_vs_cpu")], check=True,
                       stdout=subprocess.DEVNULL)
        say(f"GPU against CPU ({cpu}), per cell: {out / 'gpu_vs_cpu' / 'results.md'}")
    else:
        say(f"GPU against CPU: skipped, {cpu} holds no sweep (--cpu-results DIR: the published docs/results/table1)")
    # reproducibility on the GPU, and what trainer.deterministic=true costs
    for name in ("default", "deterministic"):
        runs = []
        for i in (1, 2):
            overrides, folder, _ = steps[f"{name}-{i}"]
            done = subprocess.run(train_command(overrides, folder, sweep=False), check=False, capture_output=True,
                                  text=True)
            if done.returncode != 0:  # e.g. an operation without a deterministic CUDA kernel
                runs.append({"error": (done.stderr.strip().splitlines() or ["no message"])[-1]})
            else:
                runs.append(json.loads((folder / "metrics.json").read_text()))
        setting = f"conv seed 0 twice, {name} settings"
        if "error" in runs[0] or "error" in runs[1]:
            say(f"{setting}: failed: {runs[0].get('error') or runs[1].get('error')}")
            continue
        same = runs[0]["history"] == runs[1]["history"]
        say(f"{setting}: histories {'identical' if same else 'DIFFER'}; training "
            f"{runs[0]['train_time_s']:.1f} s and {runs[1]['train_time_s']:.1f} s")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    runs = sub.add_parser("runs", help="Lightning path vs raw loop, per architecture")
    runs.add_argument("--arch", nargs="+", default=["shallow", "deep", "conv"], choices=["shallow", "deep", "conv"])
    runs.add_argument("--repeats", type=positive, default=5)
    runs.add_argument("--epochs", type=positive, default=50)
    runs.add_argument("--threads", type=positive, default=1)
    runs.add_argument("--seeds", type=int, default=10,
                      help="seeds of the batched cell timed for each MLP, as a sweep trains them (10; 0: none)")
    runs.add_argument("--peak-gflops-per-core", type=float, default=cpu_peak_gflops_per_core(),
                      help=f"default: {cpu_clock_ghz()[1]} x 32 fp32 FLOP/cycle (two 256-bit FMA units)")
    layers = sub.add_parser("layers", help="the ConvNet's convolutions one by one, against a matrix product")
    layers.add_argument("--repeats", type=positive, default=30)
    layers.add_argument("--threads", type=positive, default=1)
    layers.add_argument("overrides", nargs="*", help="arch.pipe.* and data.batch_size settings, "
                        "e.g. arch.pipe.channels_last=false")
    sweep = sub.add_parser("sweep", help="time the whole Table-1 sweep")
    sweep.add_argument("--jobs", type=positive, default=os.cpu_count() or 1, help="parallel runs (default: cores)")
    sweep.add_argument("--seeds", type=positive, default=10)
    sweep.add_argument("overrides", nargs="*", help="passed on to every run, e.g. trainer.precision=bf16-mixed")
    prog = sub.add_parser("progress", help="what the progress line costs a job, on a finished sweep")
    prog.add_argument("sweep_dir", nargs="?", default="docs/results/table1")
    gpu = sub.add_parser("gpu", help="the GPU figures: placement, the whole study, reproducibility")
    gpu.add_argument("--jobs", type=positive, default=8, help="runs at a time on the one GPU (default: 8)")
    gpu.add_argument("--seeds", type=positive, default=10)
    gpu.add_argument("--out", default="gpu-benchmark", help="a new or empty folder (default: gpu-benchmark)")
    gpu.add_argument("--cpu-results", default=str(Path(__file__).resolve().parent.parent / "docs/results/table1"),
                     help="the CPU sweep to pair with (default: the published docs/results/table1 of this checkout)")
    args = parser.parse_args()
    modes = {"runs": bench_runs, "layers": bench_layers, "sweep": bench_sweep, "progress": bench_progress,
             "gpu": bench_gpu}
    modes[args.mode](args)


if __name__ == "__main__":
    main()
