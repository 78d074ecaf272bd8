"""An MLP cell's ten seeds trained as one batched model: is every seed's history the published
solo run's, and what does it cost per model against a solo run through `fit`?

The evidence behind docs/study.md's paragraph on fusing seeds (a design measured, not adopted):

    python docs/experiments/fused_seeds.py shallow true 0.5 --repeats 3
    python docs/experiments/fused_seeds.py deep false 0 --repeats 3

Each seed's model is built as `fit` builds it (`pl.seed_everything(seed)`, the module, the data
module), the weights stacked; linear layers as `baddbmm` with the solo layer's own gradient
formulas (`--loop`: a loop over the seeds inside the layer, the solo kernels); losses and counts
per seed; one default Adam over the stacked weights. Compared with docs/results/table1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from mnist_compare.models.module import counts, mixed_loss
from mnist_compare.paths import CONF_DIR
from mnist_compare.run.allocator import keep_freed_memory
from mnist_compare.run.cuda_probe import skip_nvml_probe
from mnist_compare.run.fit import fit

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "table1"


class BatchedLinear(torch.autograd.Function):
    """x [S, B, in], w [S, out, in], b [S, out]; each slice's gradients by the solo formulas."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, w = ctx.saved_tensors
        return torch.bmm(g, w), torch.bmm(g.transpose(1, 2), x), g.sum(1)


class LoopedLinear(torch.autograd.Function):
    """The same, one seed at a time with the solo layer's kernels."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return torch.stack([torch.addmm(b[i], x[i], w[i].t()) for i in range(x.size(0))])

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, w = ctx.saved_tensors
        seeds = range(x.size(0))
        return (torch.stack([g[i].mm(w[i]) for i in seeds]), torch.stack([g[i].t().mm(x[i]) for i in seeds]),
                g.sum(1))


def stacked(sequentials: list[nn.Sequential]) -> list[tuple]:
    """The seeds' Flatten/Linear/ReLU stacks as one: ("flat",), ("relu",), ("linear", W, b)."""
    layers: list[tuple] = []
    for same in zip(*[list(s) for s in sequentials], strict=True):
        if isinstance(same[0], nn.Linear):
            layers.append(("linear", nn.Parameter(torch.stack([m.weight.detach() for m in same]).clone()),
                           nn.Parameter(torch.stack([m.bias.detach() for m in same]).clone())))
        elif isinstance(same[0], nn.ReLU | nn.Flatten):
            layers.append(("relu",) if isinstance(same[0], nn.ReLU) else ("flat",))
        else:
            raise TypeError(f"not an MLP layer: {same[0]}")
    return layers


def train_fused(cfg: DictConfig, seeds: list[int],
                linear: type[torch.autograd.Function]) -> list[dict[str, list[float]]]:
    nets, data = [], []
    for seed in seeds:
        pl.seed_everything(seed, verbose=False)  # as `fit`: the module first, then the data module
        nets.append(instantiate(cfg.model, _recursive_=False).net)
        dm = instantiate(cfg.data, seed=seed)
        dm.setup("fit")
        data.append(dm)
    pipes = [stacked([n.pipes[i] for n in nets]) for i in range(len(nets[0].pipes))]
    classifier = stacked([n.classifier for n in nets])
    optimizer = torch.optim.Adam([p for layers in (*pipes, classifier) for layer in layers for p in layer[1:]],
                                 lr=cfg.model.optimizer.lr)

    def run(layers: list[tuple], x: torch.Tensor) -> torch.Tensor:
        for kind, *weights in layers:
            x = x.flatten(2) if kind == "flat" else torch.relu_(x) if kind == "relu" else linear.apply(x, *weights)
        return x

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first, second = x[:, :, 0:1], x[:, :, 1:2]
        if len(pipes) == 1:  # weight sharing: one pipe sees both digits, as PairNet does
            aux_first, aux_second = run(pipes[0], torch.cat((first, second), 1)).chunk(2, 1)
        else:
            aux_first, aux_second = run(pipes[0], first), run(pipes[1], second)
        return run(classifier, torch.cat((aux_first, aux_second), 2)), aux_first, aux_second

    train = [torch.stack([d.splits["train"][k] for d in data]) for k in range(3)]
    test = [torch.stack([d.splits["test"][k] for d in data]) for k in range(3)]
    w, batch = float(cfg.aux), cfg.data.batch_size
    history: list[dict[str, list[float]]] = [{} for _ in seeds]

    def note(i: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            history[i].setdefault(k, []).append(v)

    for _ in range(cfg.trainer.max_epochs):
        sums: list[list[torch.Tensor]] = [[] for _ in seeds]
        for start in range(0, train[0].size(1), batch):
            x, y, c = (t[:, start : start + batch] for t in train)
            out = forward(x)
            each = [(out[0][i], out[1][i], out[2][i]) for i in range(len(seeds))]
            losses = [mixed_loss(o, y[i], c[i], w) for i, o in enumerate(each)]
            optimizer.zero_grad()
            sum(losses[1:], losses[0]).backward()  # each seed's loss gets the gradient 1 exactly
            with torch.no_grad():
                for i, o in enumerate(each):
                    n = torch.tensor(float(y[i].numel()))
                    sums[i].append(torch.cat(((losses[i] * n).view(1), counts(o, y[i], c[i]), n.view(1))))
            optimizer.step()
        with torch.inference_mode():
            out = forward(test[0])
        for i in range(len(seeds)):
            loss, correct, digits, _, n = torch.stack(sums[i]).sum(0).tolist()
            note(i, {"train_loss": loss / n, "train_acc": correct / n, "train_aux_acc": digits / (2 * n)})
            o, y, c = (out[0][i], out[1][i], out[2][i]), test[1][i], test[2][i]
            m = y.numel()
            right, digits, rule = counts(o, y, c).tolist()
            note(i, {"test_loss": F.cross_entropy(o[0], y, reduction="sum").item() / m, "test_acc": right / m,
                     "test_aux_acc": digits / (2 * m), "test_rule_acc": rule / m})
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", choices=["shallow", "deep"])
    parser.add_argument("ws", choices=["true", "false"])
    parser.add_argument("aux", choices=["0", "0.5"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--loop", action="store_true", help="the seeds one at a time inside each layer")
    args = parser.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    skip_nvml_probe()
    seeds = list(range(10))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", [f"arch={args.arch}", f"ws={args.ws}", f"aux={args.aux}", "seed=0"])
        fused, solo = [], []
        for repeat in range(args.repeats):  # alternating: fused ten, then one solo run
            started = time.perf_counter()
            history = train_fused(cfg, seeds, LoopedLinear if args.loop else BatchedLinear)
            fused.append((time.perf_counter() - started) / len(seeds))
            if repeat == 0:
                same = 0
                for seed, mine in zip(seeds, history, strict=True):
                    run = f"arch={args.arch},aux={args.aux},seed={seed},ws={args.ws}"
                    published = json.loads((PUBLISHED / run / "metrics.json").read_text())["history"]
                    same += all(published[k] == v for k, v in mine.items())
                print(f"{args.arch} ws={args.ws} aux={args.aux}: every history equal to the published run's "
                      f"for {same} of {len(seeds)} seeds")
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                fit(cfg, Path(out))
                solo.append(time.perf_counter() - started)
        f, s = statistics.median(fused), statistics.median(solo)
        print(f"per model: fused {f:.3f} s, solo through fit {s:.3f} s, ratio {f / s:.3f} "
              f"(medians of {args.repeats})")


if __name__ == "__main__":
    main()
