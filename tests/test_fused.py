"""An MLP cell's seeds trained as one batched model (mnist_compare/accel/fused.py): every seed's
numbers and record are those of its run made alone, and whatever is not known to repeat them
trains alone."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from conftest import train
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_compare.accel import fused
from mnist_compare.paths import CONF_DIR
from mnist_compare.results import write_json
from mnist_compare.run.fit import fit
from mnist_compare.run.identity import identity_config, run_id


def configs(*overrides: str, seeds: range = range(2), epochs: int = 2) -> list:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return [compose("train", [*overrides, f"seed={s}", f"trainer.max_epochs={epochs}"]) for s in seeds]


def trained(cfgs: list, sweep_dir: Path = Path("/nonexistent")) -> dict:
    return fused.train_cell(cfgs, sweep_dir)


@pytest.mark.parametrize("overrides", [
    ("arch=shallow", "ws=true", "aux=0.5"),
    ("arch=deep", "ws=false", "aux=0"),
    ("arch=deep", "ws=true", "aux=1"),  # the comparison loss weighted 0: its layers get no gradient
    # bf16-mixed: Lightning's autocast around the step; the products and their gradients in bf16
    ("arch=deep", "ws=true", "aux=0.5", "trainer.precision=bf16-mixed"),
    ("arch=shallow", "ws=false", "aux=0", "trainer.precision=bf16-mixed"),
    # a user's own MLP and data settings: the check on its shapes, not a list of known ones
    ("arch=shallow", "ws=false", "aux=0.3", "arch.pipe.sizes=[196,64,32,10]", "data.batch_size=64",
     "data.shuffle=true", "data.normalize=true", "model.label_smoothing=0.1", "+model.optimizer.weight_decay=0.01"),
])
@pytest.mark.slow
def test_each_seed_of_a_cell_repeats_its_solo_run(overrides, mnist_dir, tmp_path):
    cfgs = configs(*overrides)
    batched = trained(cfgs)
    assert len(batched) == len(cfgs)
    for cfg in cfgs:
        alone = fit(cfg, tmp_path / str(cfg.seed))
        mine = batched[run_id(identity_config(cfg))]
        assert {k.replace("/", "_"): v for k, v in mine["history"].items()} == alone["history"]  # float for float
        assert list(alone["history"]) == [k.replace("/", "_") for k in mine["history"]]  # the same order
        assert mine["n_params"] == alone["n_params"]


@pytest.mark.parametrize("overrides", [
    ("arch=conv",),  # not a Flatten/Linear/ReLU stack
    ("+arch.pipe.dropout=0.2",),
    ("trainer.precision=bf16-true",),  # weights in bf16: not what a cell computes
    ("trainer.precision=16-mixed",),
    ("threads=2",),
    ("data.val_pairs=200", "callbacks=best_on_val"),
    ("+trainer.gradient_clip_val=1.0",),
    ("checkpoint_after_s=0",),
    ("fuse_seeds=false",),
    ("data.augment={_target_:mnist_compare.data.augment.PairAugment}",),
    ("model.optimizer._target_=torch.optim.AdamW",),
    ("+model.scheduler._target_=torch.optim.lr_scheduler.StepLR", "+model.scheduler._partial_=true",
     "+model.scheduler.step_size=1"),
    ("logger._target_=pytorch_lightning.loggers.CSVLogger",),
])
@pytest.mark.slow
def test_what_a_cell_does_not_repeat_trains_alone(overrides, mnist_dir):
    assert trained(configs("arch=shallow", *overrides, epochs=1)) == {}


@pytest.mark.slow
def test_a_batch_that_would_not_repeat_the_solo_layers_trains_alone(mnist_dir, monkeypatch, caplog):
    """The cell compares its batched layers with each seed's own on its data before training."""
    product = fused.torch.baddbmm
    monkeypatch.setattr(fused.torch, "baddbmm", lambda b, x, w: product(b, x, w) * (1 + 1e-7))
    with caplog.at_level(logging.INFO, logger="mnist_compare"):
        assert trained(configs("arch=shallow", epochs=1)) == {}
    assert "do not repeat the solo ones" in caplog.text


@pytest.mark.slow
def test_a_batched_optimiser_step_that_would_not_repeat_the_solo_ones_trains_alone(mnist_dir, monkeypatch, caplog):
    """The cell's check takes one optimiser step both ways too: elementwise kernels treat a
    tensor's tail apart, and stacking moves each seed's values within the tensor."""
    own = fused._optimizer

    def slightly_off_when_stacked(module, params):
        optimizer = own(module, params)
        if params[0].dim() == 3:  # the stacked weights [seeds, out, in]
            optimizer.param_groups[0]["lr"] *= 1 + 1e-6
        return optimizer

    monkeypatch.setattr(fused, "_optimizer", slightly_off_when_stacked)
    with caplog.at_level(logging.INFO, logger="mnist_compare"):
        assert trained(configs("arch=deep", epochs=1)) == {}
    assert "do not repeat the solo ones" in caplog.text


@pytest.mark.slow
def test_a_failure_in_the_batch_leaves_its_seeds_to_train_alone(mnist_dir, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(fused, "_evaluate", broken)
    with caplog.at_level(logging.WARNING, logger="mnist_compare"):
        assert trained(configs("arch=shallow", epochs=1)) == {}
    assert "seeds 0,1 trained one by one: batching them failed (RuntimeError: out of memory)" in caplog.text


@pytest.mark.slow
def test_a_cell_trains_only_its_unfinished_seeds(mnist_dir, tmp_path):
    cfgs = configs("arch=shallow", seeds=range(4), epochs=1)
    for cfg in cfgs[:2]:  # finished in an earlier launch of the sweep
        config = identity_config(cfg)
        write_json(tmp_path / f"seed{cfg.seed}" / "metrics.json",
                   {"status": "finished", "config": config, "run_id": run_id(config)})
    assert set(trained(cfgs, tmp_path)) == {run_id(identity_config(c)) for c in cfgs[2:]}
    assert trained(cfgs[:3], tmp_path) == {}  # one seed left: it trains alone


def records(sweep: Path) -> dict[str, tuple]:
    out = {}
    for folder in sorted(p for p in sweep.iterdir() if p.is_dir()):
        m = json.loads((folder / "metrics.json").read_text())
        for volatile in ("train_time_s", "overrides"):
            m.pop(volatile)
        events = EventAccumulator(str(folder / "tb")).Reload()
        scalars = {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}
        files = sorted(p.name.split(".")[0] for p in (folder / "tb").iterdir())
        out[folder.name] = (m, list(m), scalars, files, (folder / "tb" / "hparams.yaml").read_text())
    return out


@pytest.mark.slow
def test_a_sweep_with_batched_cells_writes_the_records_of_one_without(tmp_path, mnist_dir):
    sweep = ["-m", "arch=shallow", "ws=true,false", "aux=0.5", "seed=range(4)", "trainer.max_epochs=1",
             "hydra.launcher.n_jobs=2"]
    (tmp_path / "batched").mkdir()  # the default sweep folder, multirun/${now:...}, as a user's
    batched = train(*sweep, cwd=tmp_path / "batched")
    assert batched.returncode == 0, batched.stderr
    assert batched.stdout.count("batched with 1 other seed ") == 8  # 4 cells of 2: two tasks per worker
    alone = train(*sweep, "fuse_seeds=false", f"hydra.sweep.dir={tmp_path / 'alone'}")
    assert alone.returncode == 0 and "batched with" not in alone.stdout
    (made,) = (tmp_path / "batched" / "multirun").glob("*/*")
    assert records(made) == records(tmp_path / "alone")


@pytest.mark.slow
def test_a_cells_first_record_counts_its_other_seeds_as_ended(tmp_path, mnist_dir):
    """The progress line of a cell's first record (train.py passes the seeds trained with it):
    one worker, two cells of two seeds; when the last cell's first record is written, the one
    seed left to record is no run left to wait for, so no ETA."""
    sweep = train("-m", "arch=shallow", "seed=range(4)", "trainer.max_epochs=1", "logger=null",
                  "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={tmp_path}")
    assert sweep.returncode == 0, sweep.stderr
    marks = [line.rsplit("  [", 1)[1] for line in sweep.stdout.splitlines() if ": test_acc " in line]
    assert marks[0].startswith("1/4 done, 0 failed, ETA "), sweep.stdout  # two runs left: the other cell
    assert marks[2:] == ["3/4 done, 0 failed]", "4/4 done, 0 failed]"], sweep.stdout
    assert sweep.stdout.count("batched with 1 other seed ") == 4


@pytest.mark.slow
def test_the_launcher_batches_plain_mlp_cells_only_and_keeps_the_jobs_order():
    from mnist_compare.accel.launch import seed_cells

    jobs = [(i, [], cfg) for i, cfg in enumerate(
        [c for arch in ("shallow", "conv") for c in configs(f"arch={arch}", seeds=range(10), epochs=1)]
        + configs("arch=deep", "arch.classifier._target_=mnist_compare.models.prob_classifier", seeds=range(4)))]
    jobs.append((len(jobs), [], None))  # a job the check did not compose (Optuna's)
    tasks = seed_cells(jobs, {"n_jobs": 2})
    assert [[j[0] for j in task] for task in tasks] == [list(range(10)), *([i] for i in range(10, 25))]
    assert [len(t) for t in seed_cells(jobs[:10], {"n_jobs": 2})] == [2, 3, 2, 3]  # two tasks per worker
    assert [len(t) for t in seed_cells(jobs[:3], {"n_jobs": 2})] == [1, 1, 1]


def test_the_batched_layer_computes_no_gradient_autograd_would_not(monkeypatch):
    """The images need no gradient: a solo run's first linear layer computes none, nor does a cell's."""
    x = torch.randn(3, 5, 7)
    w, b = torch.randn(3, 4, 7, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    products, bmm = [], torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda a, c: products.append((tuple(a.shape), tuple(c.shape))) or bmm(a, c))
    fused.BatchedLinear.apply(x, w, b, None).sum().backward()
    assert products == [((3, 4, 5), (3, 5, 7))]  # the weight's gradient only
    assert w.grad.shape == w.shape and b.grad.shape == b.shape


@pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ, reason="mutation testing rewrites the classes' source")
def test_the_cell_knows_the_module_and_net_it_repeats():
    """`VERIFIED` pins the code of CompareModule and PairNet that the batched cell repeats. When
    this fails, one of them was edited: make `accel/fused.py` repeat the edit (the tests above,
    `test_each_seed_of_a_cell_repeats_its_solo_run`, say whether it does), then set VERIFIED to
    the hashes below. Until then every seed trains alone, with the edit."""
    from mnist_compare.models.module import CompareModule
    from mnist_compare.models.nets import PairNet

    assert {c.__name__: fused.code_hash(c) for c in (CompareModule, PairNet)} == fused.VERIFIED


def test_a_method_replaced_at_run_time_is_not_the_verified_code(monkeypatch):
    from mnist_compare.models.module import CompareModule

    assert fused.code_hash(CompareModule) is not None
    monkeypatch.setattr(CompareModule, "on_train_epoch_end", lambda self: None)
    assert fused.code_hash(CompareModule) is None


def _scaled_loss(step):
    def training_step(self, batch, batch_idx):
        return step(self, batch, batch_idx) * (1 + 2**-10)
    return training_step


def _doubled_lr(configure):
    def configure_optimizers(self):
        optimizer = configure(self)
        optimizer.param_groups[0]["lr"] *= 2
        return optimizer
    return configure_optimizers


@pytest.mark.parametrize(("method", "edit"), [("training_step", _scaled_loss),
                                              ("configure_optimizers", _doubled_lr)])
def test_the_cell_checks_against_the_modules_own_step_and_optimiser(method, edit, mnist_dir, monkeypatch, caplog):
    """Past the code pin (as if VERIFIED had been updated without the cell): the check before
    training compares the batched step with the module's own `training_step` and the optimiser
    of its own `configure_optimizers`, so an edit of either still makes the seeds train alone."""
    from mnist_compare.models.module import CompareModule

    monkeypatch.setattr(fused, "verified", lambda modules: True)
    monkeypatch.setattr(CompareModule, method, edit(getattr(CompareModule, method)))
    with caplog.at_level(logging.INFO, logger="mnist_compare"):
        assert trained(configs("arch=shallow", "ws=true", "aux=0.5", epochs=1)) == {}
    assert "do not repeat the solo ones" in caplog.text


# What a user forking the project might add to CompareModule: the first to `training_step`'s loss,
# the second to `configure_optimizers` (the learning rate doubled on the optimiser it made).
EDITS = {
    "loss": ("        loss = mixed_loss(outputs, target, classes, self.aux_loss_weight, self.label_smoothing)\n",
             "        loss = loss + 1e-3 * sum(p.pow(2).sum() for p in self.parameters())\n"),
    "optimiser": ("        optimizer = make(self.parameters())\n",
                  "        optimizer.param_groups[0][\"lr\"] *= 2\n"),
}


def plain_records(sweep: Path) -> dict[str, dict]:
    """Each run's metrics.json, but for what differs between two launches of the same runs."""
    out = {}
    for path in sorted(sweep.glob("*/metrics.json")):
        m = json.loads(path.read_text())
        for volatile in ("train_time_s", "overrides"):
            m.pop(volatile)
        out[path.parent.name] = m
    return out


@pytest.mark.slow
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edit_of_the_module_in_a_copied_package_reaches_every_seed(edit, tmp_path, mnist_dir):
    """A user's copy of the package with one line added to CompareModule: the default sweep (its
    MLP cells batched) writes the records of one whose runs train alone, float for float."""
    import shutil

    from conftest import ROOT

    source = tmp_path / "src"
    for part in ("mnist_compare", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    module = source / "mnist_compare" / "models" / "module.py"
    anchor, line = EDITS[edit]
    text = module.read_text()
    assert text.count(anchor) == 1
    module.write_text(text.replace(anchor, anchor + line))
    env = {"PYTHONPATH": os.pathsep.join([str(source), *filter(None, [os.environ.get("PYTHONPATH")])])}
    sweep = ["-m", "arch=shallow", "ws=true", "aux=0.5", "seed=range(4)", "trainer.max_epochs=2", "logger=none",
             "hydra.launcher.n_jobs=1"]  # two cells of two seeds
    default = train(*sweep, f"hydra.sweep.dir={tmp_path / 'default'}", cwd=tmp_path, env=env)
    assert default.returncode == 0, default.stderr
    alone = train(*sweep, "fuse_seeds=false", f"hydra.sweep.dir={tmp_path / 'alone'}", cwd=tmp_path, env=env)
    assert alone.returncode == 0, alone.stderr
    batched, solo = plain_records(tmp_path / "default"), plain_records(tmp_path / "alone")
    assert len(batched) == 4 and batched == solo
    # here because the edit is not the code the cell was verified against: they trained alone
    assert "batched with" not in default.stdout and "was verified against" in default.stdout, default.stdout
