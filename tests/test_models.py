"""Architectures, weight sharing and the loss mixing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mnist_compare.models.module import mixed_loss
from mnist_compare.paths import CONF_DIR

PARAMS = {  # docs/reference/original-study.md
    ("shallow", False): 208_172, ("shallow", True): 104_662,
    ("deep", False): 199_942, ("deep", True): 100_712,
    ("conv", False): 136_206, ("conv", True): 68_472,
}


def build(arch: str, ws: bool, aux: float = 0.0):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", [f"arch={arch}", f"ws={str(ws).lower()}", f"aux={aux}"])
    return instantiate(cfg.model, _recursive_=False)


@pytest.mark.parametrize(("arch", "ws"), list(PARAMS))
def test_parameter_counts_match_the_protocol(arch, ws):
    model = build(arch, ws)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[arch, ws]
    logits, a, b = model(torch.rand(4, 2, 14, 14) * 255)
    assert logits.shape == (4, 2) and a.shape == b.shape == (4, 10)


def test_weight_sharing_applies_one_pipe_to_both_images():
    net = build("shallow", True).net
    assert len(net.pipes) == 1
    x = torch.rand(3, 2, 14, 14)
    _, a, b = net(x)
    pipe = net.pipes[0]
    assert torch.allclose(a, pipe(x[:, 0:1]), atol=1e-5) and torch.allclose(b, pipe(x[:, 1:2]), atol=1e-5)
    # a change of the shared pipe changes what both images give
    with torch.no_grad():
        pipe[1].bias.add_(1.0)
    _, a2, b2 = net(x)
    assert not torch.allclose(a, a2) and not torch.allclose(b, b2)


def test_without_weight_sharing_each_image_has_its_own_pipe():
    net = build("conv", False).net
    first, second = net.pipes
    assert {id(p) for p in first.parameters()}.isdisjoint(id(p) for p in second.parameters())
    assert not torch.equal(first[0].weight, second[0].weight)  # independently initialised
    x = torch.rand(3, 2, 14, 14)
    _, a, _ = net(x)
    a.sum().backward()  # the first image's digit output reaches the first pipe only
    assert all(p.grad is not None for p in first.parameters())
    assert all(p.grad is None for p in second.parameters())


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0])
def test_loss_mixing(w):
    torch.manual_seed(0)
    logits, a, b = torch.randn(8, 2), torch.randn(8, 10), torch.randn(8, 10)
    target, classes = torch.randint(0, 2, (8,)), torch.randint(0, 10, (8, 2))
    main = F.cross_entropy(logits, target)
    aux = (F.cross_entropy(a, classes[:, 0]) + F.cross_entropy(b, classes[:, 1])) / 2
    got = mixed_loss((logits, a, b), target, classes, w)
    assert torch.allclose(got, (1 - w) * main + w * aux)
    assert torch.allclose(got, {0.0: main, 0.5: (main + aux) / 2, 1.0: aux}[w])


def test_aux_weight_one_gives_the_main_head_no_gradient():
    model = build("shallow", True, 1.0)
    x, target, classes = torch.rand(5, 2, 14, 14), torch.randint(0, 2, (5,)), torch.randint(0, 10, (5, 2))
    mixed_loss(model(x), target, classes, 1.0).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.net.classifier.parameters())


def test_non_finite_training_loss_fails_the_run():
    model = build("shallow", True)
    model._train_sums = [torch.tensor([float("nan"), 50.0, 100.0, 50.0, 100.0])]
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        model.on_train_epoch_end()


def test_allocator_keeps_freed_memory_on_glibc():
    """`fit` asks glibc to keep large freed buffers (the ConvNet's per-epoch evaluation pays
    page faults otherwise); on this project's Linux machines the request must take."""
    import platform

    from mnist_compare.accel.allocator import keep_freed_memory

    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


@pytest.mark.slow
def test_allocator_serves_large_buffers_without_fresh_mappings():
    """After `keep_freed_memory`, a ConvNet-sized buffer (40 MB: the WS evaluation's activations)
    comes from the heap, not from a fresh mapping that page-faults every epoch; without it glibc
    maps it (the control that shows the check can fail)."""
    import subprocess
    import sys

    probe = """
import ctypes, sys, torch
from mnist_compare.accel.allocator import keep_freed_memory
names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "keep":
    keep_freed_memory()
for _ in range(3):
    x = torch.empty(10_000_000)
    mapped = libc.mallinfo2().hblkhd
    del x
print(mapped)
"""
    mapped = {how: int(subprocess.run([sys.executable, "-c", probe, how], capture_output=True, text=True,
                                      check=True).stdout) for how in ("keep", "default")}
    assert mapped["default"] >= 40_000_000 and mapped["keep"] < 40_000_000, mapped


@pytest.mark.parametrize("batch_norm", [False, True])
def test_relu_in_place_gives_the_same_outputs_and_gradients(batch_norm):
    from mnist_compare.models.nets import conv_pipe, mlp

    x = torch.randn(8, 1, 14, 14)
    for make in (lambda: mlp([196, 32, 16, 10], batch_norm=batch_norm),
                 lambda: conv_pipe(batch_norm=batch_norm)):
        results = []
        for inplace in (True, False):
            torch.manual_seed(0)
            net = make()
            for m in net.modules():
                if isinstance(m, torch.nn.ReLU):
                    m.inplace = inplace
            out = net(x)
            out.square().sum().backward()
            results.append((out.detach(), [p.grad for p in net.parameters()]))
        (a, ga), (b, gb) = results
        assert torch.equal(a, b) and all(torch.equal(g, h) for g, h in zip(ga, gb, strict=True))


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to the last bit, the sign of a zero included (`torch.equal` has -0.0 == 0.0)."""
    return torch.equal(a.float().view(torch.int32), b.float().view(torch.int32))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["conv", "best"])
def test_pooling_runs_before_relu_and_gives_the_protocols_numbers(arch):
    """The protocol's order is conv, ReLU, max-pooling; pooling first is the same function with
    the same gradients (max and ReLU commute), so training follows it to the last bit: the
    study's ConvNet, and `best` (batch norm, dropout, a 2x2 pooling of a 7x7 map that drops a row)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", [f"arch={arch}"])
    torch.manual_seed(0)
    ours = instantiate(cfg.arch.pipe)
    layers = list(ours)
    pools = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 2 and all(isinstance(layers[i + 1], torch.nn.ReLU) for i in pools)
    for i in pools:  # the protocol's order, same weights
        layers[i], layers[i + 1] = layers[i + 1], layers[i]
    protocol = copy.deepcopy(torch.nn.Sequential(*layers))
    x = torch.randn(6, 50, 1, 14, 14)  # centred inputs: many pooling windows hold no positive value
    for precision in (torch.float32, torch.bfloat16):
        nets = (ours, protocol)
        optimisers = [torch.optim.Adam(net.parameters(), lr=1e-2) for net in nets]
        for step, batch in enumerate(x):
            outs = []
            for net, opt in zip(nets, optimisers, strict=True):
                torch.manual_seed(step)  # the same dropout masks
                opt.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == torch.bfloat16):
                    out = net(batch)
                out.float().square().mean().backward()
                opt.step()
                outs.append(out.detach())
            assert same_bits(*outs)
        assert all(same_bits(p, q) for p, q in zip(ours.parameters(), protocol.parameters(), strict=True))
        assert all(same_bits(p, q) for p, q in zip(ours.buffers(), protocol.buffers(), strict=True))


def smoothed_ce(logits: torch.Tensor, target: torch.Tensor, s: float) -> torch.Tensor:
    """Cross-entropy with label smoothing `s`, written out: the target's share 1 - s + s/K, every
    class s/K, averaged over the batch."""
    logp = logits.log_softmax(1)
    return -((1 - s) * logp.gather(1, target[:, None]).squeeze(1) + s * logp.mean(1)).mean()


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_label_smoothing_reaches_every_term_of_the_loss(w):
    """`experiment=best` trains with smoothing 0.05 and aux 0.5: a term left unsmoothed moves its
    loss. Each term is checked on its own (the other terms' inputs fixed) against the written-out
    formula and against `F.cross_entropy`."""
    s = 0.2
    torch.manual_seed(1)
    logits, a, b = torch.randn(16, 2) * 3, torch.randn(16, 10) * 3, torch.randn(16, 10) * 3
    target, classes = torch.randint(0, 2, (16,)), torch.randint(0, 10, (16, 2))
    terms = (smoothed_ce(logits, target, s), smoothed_ce(a, classes[:, 0], s), smoothed_ce(b, classes[:, 1], s))
    assert torch.allclose(terms[0], F.cross_entropy(logits, target, label_smoothing=s))
    expected = (1 - w) * terms[0] + w * (terms[1] + terms[2]) / 2
    assert torch.allclose(mixed_loss((logits, a, b), target, classes, w, label_smoothing=s), expected)
    assert not torch.allclose(mixed_loss((logits, a, b), target, classes, w), expected)  # smoothing matters here
    # one term at a time: a logit moved in one output moves the loss by that term's smoothed change only
    for i, weight in enumerate((1 - w, w / 2, w / 2)):
        outputs = [logits, a, b]
        moved = outputs[i].clone()
        moved[:, 0] += 2.0
        outputs[i] = moved
        labels = (target, classes[:, 0], classes[:, 1])[i]
        change = weight * (smoothed_ce(moved, labels, s) - terms[i])
        got = mixed_loss(tuple(outputs), target, classes, w, label_smoothing=s)
        assert torch.allclose(got - expected, change, atol=1e-6), i


@pytest.mark.parametrize("arch", ["shallow", "conv"])
def test_without_weight_sharing_each_pipe_learns_from_its_own_image_only(arch):
    """Each image goes through its own pipe: a loss on one digit's output reaches that image's
    pipe and that image only; the other pipe and the other image get no gradient."""
    net = build(arch, False).net
    for i in range(2):
        net.zero_grad(set_to_none=True)
        x = torch.rand(4, 2, 14, 14, requires_grad=True)
        outputs = net(x)
        assert torch.allclose(outputs[1 + i], net.pipes[i](x[:, i:i + 1]), atol=1e-5)
        outputs[1 + i].square().sum().backward()
        own, other = net.pipes[i], net.pipes[1 - i]
        assert all(p.grad is not None for p in own.parameters()) and any(p.grad.any() for p in own.parameters())
        assert all(p.grad is None or not p.grad.any() for p in other.parameters()), i
        assert x.grad[:, i].any() and not x.grad[:, 1 - i].any(), i


@pytest.mark.parametrize("w", [0.0, 1.0])
def test_a_zero_weight_term_is_skipped_not_multiplied_by_zero(w):
    """aux=0 trains on the comparison alone, aux=1 on the digits alone: the unused outputs take
    no part, so even a non-finite one (0 * inf is nan) leaves the loss as it is."""
    torch.manual_seed(0)
    logits, a, b = torch.randn(8, 2), torch.randn(8, 10), torch.randn(8, 10)
    target, classes = torch.randint(0, 2, (8,)), torch.randint(0, 10, (8, 2))
    expected = mixed_loss((logits, a, b), target, classes, w)
    if w == 0:
        a, b = torch.full_like(a, float("inf")), torch.full_like(b, float("nan"))
    else:
        logits = torch.full_like(logits, float("inf"))
    got = mixed_loss((logits, a, b), target, classes, w)
    assert torch.isfinite(got) and torch.equal(got, expected)


def kinds(net: torch.nn.Module) -> list[str]:
    return [type(m).__name__ for m in net]


def test_mlp_layers_in_order():
    """ReLU (then batch norm before it, dropout after it) on hidden layers only, never on the output."""
    from mnist_compare.models.nets import mlp

    assert kinds(mlp([196, 50, 10])) == ["Flatten", "Linear", "ReLU", "Linear"]
    net = mlp([20, 8, 6, 2], dropout=0.25, batch_norm=True)
    assert kinds(net) == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU",
                          "Dropout", "Linear"]
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, torch.nn.Linear)] == [(20, 8), (8, 6), (6, 2)]
    assert all(m.p == 0.25 for m in net if isinstance(m, torch.nn.Dropout))
    assert all(m.num_features in (8, 6) for m in net if isinstance(m, torch.nn.BatchNorm1d))
    assert kinds(mlp([3, 2])) == ["Flatten", "Linear"]


def test_conv_pipe_layers_and_memory_format():
    """The study's ConvNet: 3x3 convs, pooling (where its size is above 1) before each ReLU, then the
    MLP on the flattened features; `best`'s batch norm after each conv, dropout in the MLP."""
    from mnist_compare.models.nets import conv_pipe

    pipe = conv_pipe()
    assert kinds(pipe) == ["Conv2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "MaxPool2d",
                           "ReLU", "Sequential"]
    convs = [m for m in pipe if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 16, (3, 3), (1, 1)), (16, 32, (3, 3), (0, 0)), (32, 64, (3, 3), (1, 1)), (64, 64, (3, 3), (0, 0))]
    assert [m.kernel_size for m in pipe if isinstance(m, torch.nn.MaxPool2d)] == [2, 4]
    head = pipe[-1]
    assert kinds(head) == ["Flatten", "Linear", "ReLU", "Linear"]
    assert (head[1].in_features, head[1].out_features, head[3].out_features) == (64, 100, 10)  # the study's
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert all(c.weight.is_contiguous() for c in conv_pipe(channels_last=False) if isinstance(c, torch.nn.Conv2d))
    best = conv_pipe(batch_norm=True, dropout=0.3, pool=(1, 2, 1, 2), padding=(1, 1, 1, 1))
    assert kinds(best)[:3] == ["Conv2d", "BatchNorm2d", "ReLU"] and kinds(best[-1]).count("Dropout") == 1
    assert best[-1][1].in_features == 64 * 3 * 3 and pipe(torch.rand(5, 1, 14, 14)).shape == (5, 10)
    assert kinds(best[-1]) == ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]  # the head's too
    # the flattened size is measured on a 14x14 digit, whatever the convs do to it
    unpooled = conv_pipe(channels=(4,), padding=(0,), pool=(1,))
    assert unpooled[-1][1].in_features == 4 * 12 * 12 and unpooled(torch.rand(2, 1, 14, 14)).shape == (2, 10)
    with pytest.raises(ValueError):  # one padding and one pooling size per conv, or a refusal
        conv_pipe(channels=(4, 8), padding=(0,), pool=(1, 1))


def test_the_probability_classifier_sees_each_digits_softmax():
    from mnist_compare.models.nets import DigitProbabilities, prob_classifier

    x = torch.randn(4, 20)
    p = DigitProbabilities()(x)
    assert torch.allclose(p[:, :10], x[:, :10].softmax(1)) and torch.allclose(p[:, 10:], x[:, 10:].softmax(1))
    net = prob_classifier([20, 16, 2], dropout=0.1)
    assert isinstance(net[0], DigitProbabilities) and kinds(net[1]) == ["Flatten", "Linear", "ReLU", "Dropout",
                                                                        "Linear"]
    assert net(x).shape == (4, 2)
    assert "Dropout" not in kinds(prob_classifier([20, 16, 2])[1])  # none unless asked for


def test_counts_and_figures_by_hand():
    """Three pairs whose outputs are set by hand: which comparisons and digits are right is
    known, so each count, and the epoch's figures made from them, is checked exactly."""
    from mnist_compare.models.module import add_eval_batch, counts, eval_figures, train_figures, train_sums

    def one_hot(rows, n):
        return torch.eye(n)[torch.tensor(rows)] * 5

    classes = torch.tensor([[3, 7], [8, 2], [5, 5]])
    target = (classes[:, 0] <= classes[:, 1]).long()  # 1, 0, 1
    logits = one_hot([1, 1, 1], 2)  # right, wrong, right
    a = one_hot([3, 8, 5], 10)  # right, right, right
    b = one_hot([7, 9, 5], 10)  # right, wrong, right
    # the rule on the predicted digits: 3<=7 right, 8<=9 says 1 (wrong), 5<=5 says 1 (right: a tie)
    assert counts((logits, a, b), target, classes).tolist() == [2, 5, 2]
    loss = torch.tensor(0.5)
    sums = [train_sums(loss, (logits, a, b), target, classes),
            train_sums(torch.tensor(1.0), (logits[:1], a[:1], b[:1]), target[:1], classes[:1])]
    assert sums[0].tolist() == [1.5, 2, 5, 2, 3]
    assert train_figures(sums) == pytest.approx({"loss": 2.5 / 4, "acc": 3 / 4, "aux_acc": 7 / 8})
    evaluated = [0.0, 0, 0, 0, 0]
    add_eval_batch(evaluated, (logits, a, b), target, classes)
    add_eval_batch(evaluated, (logits[:1], a[:1], b[:1]), target[:1], classes[:1])
    main = F.cross_entropy(logits, target, reduction="sum") + F.cross_entropy(logits[:1], target[:1], reduction="sum")
    assert evaluated[1:] == [3, 7, 3, 4] and evaluated[0] == pytest.approx(main.item())
    assert eval_figures(evaluated) == pytest.approx(
        {"loss": main.item() / 4, "acc": 3 / 4, "aux_acc": 7 / 8, "rule_acc": 3 / 4})


def test_training_sums_stay_on_the_models_device():
    """A GPU run keeps its per-batch sums on the GPU (no sync per step): stood in for here by
    PyTorch's `meta` device, on which a CPU tensor in the sums fails as it would on a GPU."""
    from mnist_compare.models.module import train_sums

    outputs = tuple(torch.randn(4, k, device="meta") for k in (2, 10, 10))
    target = torch.zeros(4, dtype=torch.long, device="meta")
    classes = torch.zeros(4, 2, dtype=torch.long, device="meta")
    sums = train_sums(torch.ones((), device="meta"), outputs, target, classes)
    assert sums.device.type == "meta" and sums.shape == (5,)
    assert mixed_loss(outputs, target, classes, 0.5).device.type == "meta"
