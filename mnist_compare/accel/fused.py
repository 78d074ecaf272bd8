"""The seeds of an MLP cell trained together as one batched model, each seed's numbers those of
its run made alone, float for float.

An MLP run spends more of its time in Lightning's and Python's work around each step than in
its products (mnist_compare/accel/README.md): ten seeds stacked into one model share that work.
The parallel launcher hands a cell's jobs (the same settings, seeds apart) to one worker, which
trains them here before its jobs start; each job then writes its own record from what its seed
measured (`fit.replay`), as it would have alone. Only what is known to repeat the solo run is
batched: Flatten/Linear/ReLU stacks, Adam, fp32 or bf16-mixed on the CPU, no validation split,
checkpoint or callback; every other run trains alone.

A cell re-implements what `CompareModule` and `PairNet` do in a run (step, epoch end, evaluation),
so an edit of either could make it compute other numbers than the run alone. Two guards make any
such edit make the seeds train alone instead, never change a number: the two classes' code must
be the code the cell was verified against (`VERIFIED`, a hash of their source without docstrings;
tests/test_fused.py says when to update it), and before training the cell checks on its own data
that each seed's batched outputs, loss, gradients and first optimiser steps equal, bit for bit,
those of the module's own `training_step` and of the optimiser its own `configure_optimizers` makes.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import functools
import hashlib
import inspect
import logging
import math
import textwrap
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.plugins.precision import MixedPrecision
from torch import nn

from mnist_compare.accel.allocator import keep_freed_memory
from mnist_compare.accel.cuda_probe import skip_nvml_probe
from mnist_compare.models.module import (
    CompareModule,
    add_eval_batch,
    eval_figures,
    mixed_loss,
    train_figures,
    train_sums,
)
from mnist_compare.models.nets import PairNet
from mnist_compare.run.identity import finished_runs, group_id, identity_config, run_id

log = logging.getLogger("mnist_compare")
STEPS = 3  # optimiser steps the check compares
MAX_SEEDS = 10  # per cell: more would leave a worker idle at the end of a sweep for little gain
# trainer settings a batched cell repeats; any other (fast_dev_run, limits, clipping, ...) trains alone
TRAINER_KEYS = {"_target_", "max_epochs", "accelerator", "devices", "precision", "check_val_every_n_epoch",
                "num_sanity_val_steps", "enable_checkpointing", "enable_model_summary", "enable_progress_bar",
                "log_every_n_steps"}

# the code of CompareModule and PairNet that the cell repeats (`code_hash`); checked by tests/test_fused.py
VERIFIED = {"CompareModule": "8bb6b5f9b424b099", "PairNet": "cef10446093ec652"}

Layer = tuple[Any, ...]  # ("flat",), ("relu",) or ("linear", weight [S, out, in], bias [S, out])


def fusable(cfg: DictConfig) -> bool:
    """Settings a batched cell trains exactly as `fit` would (the layers are checked later)."""
    trainer, model, data = cfg.trainer, cfg.model, cfg.data
    optimizer = model.get("optimizer")
    return bool(
        cfg.get("fuse_seeds", True) is True
        and set(trainer) <= TRAINER_KEYS
        and str(trainer.get("_target_")) in ("pytorch_lightning.Trainer", "lightning.pytorch.Trainer")
        and str(trainer.get("precision")) in ("32-true", "32", "bf16-mixed")
        and on_the_cpu(trainer.get("accelerator")) and str(trainer.get("devices")) in ("1", "auto")
        and trainer.get("check_val_every_n_epoch", 1) == 1 and not trainer.get("enable_checkpointing")
        and isinstance(trainer.get("max_epochs"), int) and trainer.max_epochs >= 1
        and model.get("_target_") == "mnist_compare.models.CompareModule" and not model.get("scheduler")
        and (not optimizer or optimizer.get("_target_") == "torch.optim.Adam")
        and data.get("_target_") == "mnist_compare.data.PairDataModule"
        and not data.get("val_pairs") and data.get("augment") is None
        and not any((cfg.get("callbacks") or {}).values())
        and cfg.get("threads") == 1
        # a cell saves no last.ckpt: only where its runs would not save one early either
        and (cfg.get("checkpoint_after_s") is None or cfg.checkpoint_after_s >= 60)
        and (not cfg.get("logger") or str(cfg.logger.get("_target_")).endswith("TensorBoardLogger"))
    )


@functools.cache
def on_the_cpu(accelerator: object) -> bool:
    """Where a solo run of this setting trains on the CPU (`auto`: where Lightning finds no CUDA,
    MPS or XLA device to choose instead)."""
    if accelerator == "auto":
        import importlib.util

        mps = getattr(torch.backends, "mps", None)
        return not torch.cuda.is_available() and not (mps is not None and mps.is_available()) \
            and importlib.util.find_spec("torch_xla") is None
    return accelerator == "cpu"


def code_hash(cls: type) -> str | None:
    """A hash of the class's code as it runs: its source without docstrings or comments; None where
    a method is not the one its source defines (replaced after the class was made)."""
    source = inspect.getsourcefile(cls)
    for value in vars(cls).values():
        fn = getattr(value, "__func__", value)
        if inspect.isfunction(fn) and (fn.__code__.co_filename != source
                                       or not fn.__qualname__.startswith(f"{cls.__qualname__}.")):
            return None
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def verified(modules: list[Any]) -> bool:
    """Whether the runs' modules and nets are the code the cell repeats: exactly `CompareModule`
    and `PairNet`, as `VERIFIED` knows them. Any edit of either makes the seeds train alone."""
    return all(type(m) is CompareModule and type(getattr(m, "net", None)) is PairNet for m in modules) and \
        all(code_hash(cls) == VERIFIED[cls.__name__] for cls in (CompareModule, PairNet))


def plain_mlps(cfg: DictConfig) -> bool:
    """Whether the run's pipe and classifier are Flatten/Linear/ReLU stacks, the layers a cell
    batches (built once, without weights that matter: the seed is not set here)."""
    try:
        return all(stacked([instantiate(part)]) is not None for part in (cfg.model.pipe, cfg.model.classifier))
    except Exception:  # the run itself will say what is wrong with it
        return False


def train_cell(cfgs: list[DictConfig], sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """Train the cell's unfinished seeds together: what each seed measured, by run_id, for the job
    that writes its record; nothing where they must train alone (fewer than two, a layer that is
    not batched exactly, code the cell was not verified against, a failure)."""
    try:
        done = finished_runs(sweep_dir) if sweep_dir.is_dir() else {}
        identities = [identity_config(cfg) for cfg in cfgs]
        todo = [(rid, cfg) for cfg, config in zip(cfgs, identities, strict=True) if (rid := run_id(config)) not in done]
        if len(todo) < 2 or not all(fusable(cfg) for _, cfg in todo) or len(set(map(group_id, identities))) > 1:
            return {}
        measured = _train([cfg for _, cfg in todo])
    except Exception as e:  # each seed trains alone instead, and meets the same error there if it is its own
        log.warning("seeds %s trained one by one: batching them failed (%s: %s)",
                    ",".join(str(cfg.seed) for cfg in cfgs), type(e).__name__, e)
        return {}
    if measured is None:
        return {}
    return {rid: m for (rid, _), m in zip(todo, measured, strict=True)}


def mixed_precision(cfg: DictConfig) -> contextlib.AbstractContextManager:
    """What the installed Lightning's `bf16-mixed` wraps a step's forward and loss in on the CPU
    (its own context, so that the cell and its check follow Lightning); nothing for fp32."""
    if str(cfg.trainer.get("precision")) == "bf16-mixed":
        return MixedPrecision("bf16-mixed", "cpu").forward_context()
    return contextlib.nullcontext()


def compute_dtype(cfg: DictConfig) -> torch.dtype | None:
    """The dtype autocast gives a linear layer's product under the run's precision, if any."""
    return torch.bfloat16 if str(cfg.trainer.get("precision")) == "bf16-mixed" else None


class BatchedLinear(torch.autograd.Function):
    """x [S, B, in] -> [S, B, out]; each seed's gradients by `F.linear`'s own formulas (autograd's
    batched weight gradient differs in the last bits for layers of 2 or 10 outputs). With a
    `dtype` (bf16-mixed), the inputs are cast to it as autocast casts `F.linear`'s, and the
    gradients are computed in it from those casts, as the backward of the cast `F.linear` computes
    them; the engine casts the weight's and bias's back, as the backward of autocast's cast does."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        if dtype is not None:
            x, w, b = x.to(dtype), w.to(dtype), b.to(dtype)
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad  # not the images' gradient, as autograd's linear
        return (torch.bmm(g, w) if need_x else None, torch.bmm(g.transpose(1, 2), x) if need_w else None,
                g.sum(1) if need_b else None, None)


def stacked(seqs: list[nn.Module]) -> list[Layer] | None:
    """The seeds' copies of one MLP as one stack of layers, or None if it is not a plain MLP."""
    if not all(type(s) is nn.Sequential for s in seqs):
        return None
    layers: list[Layer] = []
    for same in zip(*[list(s) for s in seqs], strict=True):
        first = same[0]
        if type(first) is nn.Linear and first.bias is not None:
            layers.append(("linear", nn.Parameter(torch.stack([m.weight.detach() for m in same])),
                           nn.Parameter(torch.stack([m.bias.detach() for m in same]))))
        elif type(first) is nn.ReLU:
            layers.append(("relu",))
        elif type(first) is nn.Flatten and first.start_dim == 1 and first.end_dim == -1:
            layers.append(("flat",))
        else:
            return None
    return layers


class StackedPairNet:
    """`PairNet` for S seeds at once: inputs and outputs carry the seed as a first dimension."""

    def __init__(self, nets: list[nn.Module], dtype: torch.dtype | None = None) -> None:
        self.weight_sharing, self.dtype = nets[0].weight_sharing, dtype
        pipes = [stacked([n.pipes[i] for n in nets]) for i in range(len(nets[0].pipes))]
        classifier = stacked([n.classifier for n in nets])
        self.ok = classifier is not None and all(p is not None for p in pipes)
        self.pipes, self.classifier = pipes, classifier

    def parameters(self) -> list[nn.Parameter]:
        return [p for layers in (*self.pipes, self.classifier) for layer in layers for p in layer[1:]]

    def _run(self, layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
        for kind, *weights in layers:
            x = x.flatten(2) if kind == "flat" else torch.relu_(x) if kind == "relu" else \
                BatchedLinear.apply(x, *weights, self.dtype)
        return x

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first, second = x[:, :, 0:1], x[:, :, 1:2]
        if self.weight_sharing:  # one pipe sees both digits in one call, as PairNet
            aux_first, aux_second = self._run(self.pipes[0], torch.cat((first, second), 1)).chunk(2, 1)
        else:
            aux_first, aux_second = self._run(self.pipes[0], first), self._run(self.pipes[1], second)
        return self._run(self.classifier, torch.cat((aux_first, aux_second), 2)), aux_first, aux_second


def _stack(batches: tuple[tuple[torch.Tensor, ...], ...]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.stack(parts) for parts in zip(*batches, strict=True))


def _optimizer(module: CompareModule, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The run's own optimiser (class and settings, as `configure_optimizers` makes it) over `params`."""
    own = module.configure_optimizers()
    return type(own)(params, **own.defaults)


def _own_optimizer(module: CompareModule) -> torch.optim.Optimizer | None:
    """What the module's own `configure_optimizers` gives a run alone, where a cell can repeat it:
    one optimiser of one parameter group with its class's settings over every parameter (a
    scheduler, parameter groups or settings of their own: None, the seeds train alone)."""
    own = module.configure_optimizers()
    if not isinstance(own, torch.optim.Optimizer) or len(own.param_groups) != 1:
        return None
    group = own.param_groups[0]
    mine = {id(p) for p in group["params"]}
    if mine != {id(p) for p in module.parameters()} or \
            any(group[k] != v for k, v in own.defaults.items() if k != "params"):
        return None
    return own


def _same_step(net: StackedPairNet, modules: list[CompareModule], grads: list[torch.Tensor | None]) -> bool:
    """`STEPS` optimiser steps on copies of the stacked weights, with the batched gradients,
    against each seed's own optimiser (its module's `configure_optimizers`, on a copy of the
    module) stepping its own weights: elementwise kernels treat a tensor's tail apart from its
    vectorised body, and stacking moves each seed's values within the tensor (the first step adds
    to zero moments; the later ones do not)."""
    stacked_copy = [p.detach().clone().requires_grad_() for p in net.parameters()]
    for p, g in zip(stacked_copy, grads, strict=True):
        p.grad = None if g is None else g.clone()
    batched = _optimizer(modules[0], stacked_copy)
    singles = []
    for i, module in enumerate(modules):
        twin = copy.deepcopy(module)
        own = _in_stack_order(twin)
        for p, g in zip(own, grads, strict=True):
            p.grad = None if g is None else g[i].clone()
        optimizer = _own_optimizer(twin)
        if optimizer is None:
            return False
        singles.append((own, optimizer))
    for _ in range(STEPS):
        batched.step()
        for i, (own, optimizer) in enumerate(singles):
            optimizer.step()
            if not all(torch.equal(a[i], b) for a, b in zip(stacked_copy, own, strict=True)):
                return False
    return True


def _same_as_alone(net: StackedPairNet, modules: list[CompareModule], data: list[Any], w: float,
                   smoothing: float, amp: Callable[[], contextlib.AbstractContextManager]) -> bool:
    """Each seed's outputs, loss, gradients and first optimiser steps, batched and alone (the
    module's own `forward` and `training_step`), bit for bit, at every batch size the cell will
    use (the products' kernels, hence their sums' order, depend on the shapes only)."""
    params = net.parameters()
    for module in modules:  # every parameter of a run is one the cell trains
        if {id(p) for p in _in_stack_order(module)} != {id(p) for p in module.parameters()}:
            return False
    for stage, size in _batch_sizes(data[0]):
        x, y, c = _stack(tuple(tuple(t[:size] for t in dm.splits[stage]) for dm in data))
        with amp():
            outputs = net(x)
            losses = [mixed_loss((outputs[0][i], outputs[1][i], outputs[2][i]), y[i], c[i], w, smoothing)
                      for i in range(len(modules))]
        grads = torch.autograd.grad(sum(losses), params, allow_unused=True)  # aux=1: the classifier gets none
        for i, module in enumerate(modules):
            # its step may keep what it sums: a copy steps, the module itself is left as built
            twin = copy.deepcopy(module) if stage == "train" else module
            with amp():
                alone = twin(x[i])
                loss = twin.training_step((x[i], y[i], c[i]), 0) if stage == "train" else \
                    mixed_loss(alone, y[i], c[i], w, smoothing)
            if not isinstance(loss, torch.Tensor):
                return False
            mine = [None if g is None else g[i] for g in grads]
            theirs = torch.autograd.grad(loss, _in_stack_order(twin), allow_unused=True)
            if not torch.equal(losses[i], loss) or \
                    not all(torch.equal(o[i], a) for o, a in zip(outputs, alone, strict=True)) or \
                    not all(a is b or (a is not None and b is not None and torch.equal(a, b))
                            for a, b in zip(mine, theirs, strict=True)):
                return False
        if stage == "train" and not _same_step(net, modules, list(grads)):
            return False
    return True


def _batch_sizes(dm: Any) -> list[tuple[str, int]]:
    sizes = []
    for stage, batch in (("train", dm.batch_size), *((s, dm.eval_batch_size) for s in dm.eval_stages)):
        n = dm.splits[stage][0].size(0)
        sizes += [(stage, size) for size in sorted({min(batch, n), n % batch} - {0})]
    return sizes


def _in_stack_order(module: CompareModule) -> list[nn.Parameter]:
    return [p for seq in (*module.net.pipes, module.net.classifier) for m in seq if isinstance(m, nn.Linear)
            for p in (m.weight, m.bias)]


def _train(cfgs: list[DictConfig]) -> list[dict[str, Any]] | None:
    """`fit`'s training for several seeds at once: each seed's module and data module built as
    `fit` builds them, the same batches in the same order, the run's Adam over the stacked weights
    (elementwise: each seed's slice moves as its own would), losses and counts per seed."""
    keep_freed_memory()
    skip_nvml_probe()
    torch.set_num_threads(1)
    modules: list[CompareModule] = []
    data: list[Any] = []
    for cfg in cfgs:
        pl.seed_everything(cfg.seed, verbose=False)  # as `fit`: the module first, then the data module
        modules.append(instantiate(cfg.model, _recursive_=False))
        data.append(instantiate(cfg.data))
    if not verified(modules):
        log.info("seeds %s trained one by one: CompareModule or PairNet is not the code their batched cell "
                 "was verified against (mnist_compare/accel/fused.py, VERIFIED)",
                 ",".join(str(cfg.seed) for cfg in cfgs))
        return None
    net = StackedPairNet([m.net for m in modules], compute_dtype(cfgs[0]))
    if not net.ok:
        return None
    started = time.perf_counter()
    for dm in data:
        dm.setup("fit")
    w, smoothing = modules[0].aux_loss_weight, modules[0].label_smoothing
    amp = functools.partial(mixed_precision, cfgs[0])  # a fresh context manager on each call
    if not _same_as_alone(net, modules, data, w, smoothing, amp):
        log.info("seeds %s trained one by one: their batched layers do not repeat the solo ones here",
                 ",".join(str(cfg.seed) for cfg in cfgs))
        return None
    optimizer = _optimizer(modules[0], net.parameters())
    train = [dm.train_dataloader() for dm in data]
    evaluated = [dm.val_dataloader() for dm in data]
    seeds = range(len(cfgs))
    histories: list[dict[str, list[float]]] = [defaultdict(list) for _ in seeds]
    for epoch in range(cfgs[0].trainer.max_epochs):
        sums: list[list[torch.Tensor]] = [[] for _ in seeds]
        for batches in zip(*train, strict=True):
            x, y, c = _stack(batches)
            optimizer.zero_grad()
            with amp():  # as Lightning's training step: forward, loss and the step's sums
                outputs = net(x)
                each = [(outputs[0][i], outputs[1][i], outputs[2][i]) for i in seeds]
                losses = [mixed_loss(o, y[i], c[i], w, smoothing) for i, o in enumerate(each)]
                for i, o in enumerate(each):
                    sums[i].append(train_sums(losses[i], o, y[i], c[i]))
            sum(losses[1:], losses[0]).backward()  # each seed's loss gets the gradient 1, exactly
            optimizer.step()
        # the order of a solo run's records: its evaluation ends before its training epoch does
        for k, stage in enumerate(data[0].eval_stages):
            _evaluate(net, [loaders[k] for loaders in evaluated], stage, histories, amp)
        for i in seeds:
            figures = train_figures(sums[i])
            if not math.isfinite(figures["loss"]):  # the seed's own run fails with its own error
                raise FloatingPointError(f"seed {cfgs[i].seed}: non-finite training loss in epoch {epoch + 1}")
            for key, value in figures.items():
                histories[i][f"train/{key}"].append(value)
    share = (time.perf_counter() - started) / len(cfgs)
    n_params = sum(p.numel() for p in modules[0].parameters())
    return [{"history": dict(h), "n_params": n_params, "train_time_s": share, "seeds": len(cfgs),
             "hparams": {**m.hparams_initial, **dm.hparams_initial}}
            for h, m, dm in zip(histories, modules, data, strict=True)]


def _evaluate(net: StackedPairNet, loaders: list[Any], stage: str, histories: list[dict[str, list[float]]],
              amp: Callable[[], contextlib.AbstractContextManager]) -> None:
    """`CompareModule._evaluate` for every seed: per batch, summed in the same order."""
    sums: list[list[float]] = [[0.0, 0, 0, 0, 0] for _ in histories]
    with torch.inference_mode(), amp():
        for batches in zip(*loaders, strict=True):
            x, y, c = _stack(batches)
            outputs = net(x)
            for i, s in enumerate(sums):
                add_eval_batch(s, (outputs[0][i], outputs[1][i], outputs[2][i]), y[i], c[i])
    for history, s in zip(histories, sums, strict=True):
        for key, value in eval_figures(s).items():
            history[f"{stage}/{key}"].append(value)
