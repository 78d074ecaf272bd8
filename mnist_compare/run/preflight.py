"""Every job's settings checked before any job trains or any folder is written.

A Hydra callback: `on_run_start` and `on_multirun_start` come after composition and before
Hydra creates a run or sweep folder, so one bad value in `aux=0.5,1.5` costs nothing and
leaves nothing behind. The project's own sweeper (`hydra/sweeper=checked`) calls `check_sweep`
itself, with the jobs it composed, and hands them to the launcher; for any other sweeper this
callback composes them as Hydra does and checks them.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_compare.data.mnist import default_data_dir, prepare_pooled
from mnist_compare.errors import UserError
from mnist_compare.results import METRICS, read_json
from mnist_compare.run import cluster, progress
from mnist_compare.run.fit import build_trainer, quiet_lightning
from mnist_compare.run.identity import finished_runs, group_id, identity_config, run_id, targets
from mnist_compare.run.provenance import code_version, fingerprint, library_versions, source_hash
from mnist_compare.run.resume import not_ours

# The settings the program reads at the top level; anything else (e.g. `+aux_weight=0.5`) is a slip.
TOP_LEVEL = ("arch", "ws", "aux", "seed", "threads", "checkpoint_after_s", "fuse_seeds", "accel", "data", "model",
             "trainer", "logger", "callbacks")
MONITORED = ("val/acc", "val/loss")  # what the module logs for callbacks to monitor
MAX_SEED = 2**32 - 1  # the largest seed numpy and Lightning's seed_everything take
PAIR_SHAPE = (2, 14, 14)  # one input of the data module: two 14x14 digits (conf/data/pairs.yaml)
# the sweeper that runs `check_sweep` itself (conf/hydra/sweeper/checked.yaml)
CHECKED_SWEEPER = "hydra_plugins.mnist_compare_launch.plugins.CheckedSweeper"
log = logging.getLogger("mnist_compare")


def suggest(name: str, known: list[str] | tuple[str, ...]) -> str:
    close = [k for k in known if name.startswith(k) or k.startswith(name)] or difflib.get_close_matches(
        name, known, n=1, cutoff=0.6)
    return f": did you mean {close[0]}?" if close else f": use one of {', '.join(known)}"


def check_settings(cfg: DictConfig) -> None:
    """The top-level knobs and the few nested ones whose bad values would otherwise surface
    as a library's traceback; everything else is checked by building it (`dry_build`)."""
    for key in cfg:
        if key not in (*TOP_LEVEL, "hydra"):
            raise UserError(f"{key} is not a setting this program reads{suggest(str(key), TOP_LEVEL)}")
    choice = cfg.hydra.runtime.choices.get("arch")
    name = cfg.arch.get("name")
    if name is not None and choice is not None and name != choice:
        raise UserError(f"arch={choice} has `name: {name}` inside: delete that line (the name is the file's)")
    if not isinstance(cfg.ws, bool):
        raise UserError(f"ws={cfg.ws!r} is not allowed: use ws=true or ws=false")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise UserError(f"seed={cfg.seed!r} is not allowed: use an integer >= 0, e.g. seed=0 or 'seed=range(10)'")
    for key, seed in (("seed", cfg.seed), ("data.seed", cfg.data.get("seed"))):
        if isinstance(seed, int) and not 0 <= seed <= MAX_SEED:
            raise UserError(f"{key}={seed} is not allowed: use an integer from 0 to {MAX_SEED} (2**32 - 1, the "
                            f"largest seed numpy and Lightning take), e.g. {key}=0")
    smoothing = cfg.model.get("label_smoothing")
    if smoothing is not None and (isinstance(smoothing, bool) or not isinstance(smoothing, int | float)
                                  or not 0 <= smoothing < 1):
        raise UserError(f"model.label_smoothing={smoothing!r} is not allowed: use a number from 0 up to (not "
                        "including) 1, e.g. model.label_smoothing=0.1")
    for key, top in (("weight_sharing", "ws"), ("aux_loss_weight", "aux")):
        value = cfg.model.get(key, cfg[top])
        if value != cfg[top] or isinstance(value, bool) != isinstance(cfg[top], bool):
            was, now = (json.dumps(v) if isinstance(v, bool) else v for v in (value, cfg[top]))
            raise UserError(f"model.{key}={was} disagrees with {top}={now}: set {top}={was} instead (records, "
                            f"console and tables name runs by {top})")
    threads = cfg.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserError(f"threads={threads!r} is not allowed: use an integer >= 1, e.g. threads=1")
    cluster.checkpoint_after_s(cfg)
    if not isinstance(cfg.get("fuse_seeds", True), bool):
        raise UserError(f"fuse_seeds={cfg.fuse_seeds!r} is not allowed: use fuse_seeds=true or fuse_seeds=false")
    check_accel(cfg)
    epochs = cfg.trainer.get("max_epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UserError(
            f"trainer.max_epochs={epochs!r} is not allowed: use an integer >= 1, e.g. trainer.max_epochs=50")
    lr = (cfg.model.get("optimizer") or {}).get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf):
        raise UserError(f"model.optimizer.lr={lr!r} is not allowed: use a finite number > 0, e.g. "
                        "model.optimizer.lr=0.001")
    for name, callback in (cfg.get("callbacks") or {}).items():
        monitor = (callback or {}).get("monitor")
        if monitor is None:
            continue
        if monitor not in MONITORED:
            raise UserError(f"callbacks.{name}.monitor={monitor} is not logged: use one of {', '.join(MONITORED)}")
        if not cfg.data.get("val_pairs"):
            raise UserError(f"callbacks monitor {monitor} but data.val_pairs={cfg.data.get('val_pairs')}: "
                            "hold out validation pairs, e.g. data.val_pairs=200")


def check_accel(cfg: DictConfig) -> None:
    if not isinstance(cfg.get("accel", True), bool):
        raise UserError(f"accel={cfg.accel!r} is not allowed: use accel=true (the speed-ups of mnist_compare/accel) "
                        "or accel=false (none: Hydra's own joblib launcher, every run alone)")


def _chain(e: BaseException | None) -> list[BaseException]:
    out = []
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _target_error(e: BaseException, where: str, cfg: DictConfig) -> UserError:
    """One line for a config that does not build: a `_target_` that does not import, or a
    constructor that refuses its arguments (the innermost error says which)."""
    chain = _chain(e)
    if mine := next((x for x in chain if isinstance(x, UserError)), None):
        return mine
    root = chain[-1]
    reason = f"{type(root).__name__}: {str(root).strip().splitlines()[0] if str(root).strip() else ''}"
    locating = next((x for x in chain if "Error locating target" in str(x)), None)
    if locating is not None:
        target = re.search(r"Error locating target '([^']+)'", str(locating)).group(1)  # type: ignore[union-attr]
        mine = targets(OmegaConf.to_container(cfg, resolve=False))  # the user's spelling: arch.pipe, not model.pipe
        key = next((k for k, v in mine if v == target), f"{where}._target_")
        return UserError(f"{key}={target} cannot be imported ({reason}): check that its module is "
                         "installed or on PYTHONPATH and that the name is spelt right")
    return UserError(f"{where} does not build ({reason}): check its settings")


def dry_build(cfg: DictConfig, built: set[str]) -> None:
    """Instantiate the model (with its optimiser and scheduler, and one training step: `dry_step`),
    the data module (without data) and the trainer with its callbacks, each distinct config once,
    so that a wrong key, value or `_target_` fails here rather than in the middle of a sweep."""
    quiet_lightning()
    for where, node in (("model", cfg.model), ("data", cfg.data), ("trainer", cfg.trainer)):
        key = where + json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True, default=str)
        if where == "model":
            device = run_device(cfg)
            key += f" on {device.type}"
        if where == "trainer":
            key += json.dumps(OmegaConf.to_container(OmegaConf.create(cfg.get("callbacks") or {}), resolve=True),
                              default=str)
        if key in built:
            continue
        try:
            if where == "model":
                with one_thread():
                    model = instantiate(node, _recursive_=False).to(device)
                    dry_step(model, model.configure_optimizers(), cfg, device)
            elif where == "data":
                instantiate(node)
            else:
                build_trainer(cfg, None)
        except UserError:
            raise
        except Exception as e:
            raise _target_error(e, where, cfg) from None
        built.add(key)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread meanwhile: a model's initialisation and a step on four pairs gain
    nothing from more, and on a busy machine its threads' spinning cost this check 5-10x the time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_device(cfg: DictConfig) -> torch.device:
    """Where the run will train: a CUDA GPU when the trainer asks for one, or for `auto`, and one is
    visible; else the CPU (where a GPU is asked for and none is visible, the trainer refuses)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto")).lower()
    wants_gpu = accelerator in ("gpu", "cuda", "auto")
    return torch.device("cuda") if wants_gpu and torch.cuda.is_available() else torch.device("cpu")


def dry_step(model: Any, configured: Any, cfg: DictConfig, device: torch.device) -> None:
    """One forward, backward and optimiser step of the model on a synthetic batch of the data's
    shape, on the run's device (a few ms): a layer size that does not fit the next, a loss
    setting or an optimiser option that fails at its first step (e.g. `capturable` on the CPU)
    is refused here, before any job starts, instead of failing every job."""
    batch = cfg.data.get("batch_size")
    n = min(batch, 4) if isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1 else 4
    try:
        optimizer = configured.get("optimizer") if isinstance(configured, dict) else configured
        optimizer = optimizer[0] if isinstance(optimizer, list | tuple) else optimizer
        optimizer = optimizer.get("optimizer") if isinstance(optimizer, dict) else optimizer
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the jobs' seeds untouched
            torch.manual_seed(0)  # the same synthetic batch in every process: the check's verdict never varies
            x = torch.rand(n, *PAIR_SHAPE, device=device) * 255  # raw pixel values, as data.normalize=false
            target = torch.randint(0, 2, (n,), device=device)
            classes = torch.randint(0, 10, (n, 2), device=device)
            model.train()
            loss = model.training_step((x, target, classes), 0)
            loss = loss["loss"] if isinstance(loss, dict) else loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if not torch.isfinite(loss) or not all(torch.isfinite(p).all() for p in model.parameters()):
                raise UserError("the model's loss or weights are not finite after one training step on one batch: "
                                "check the optimiser's settings (e.g. model.optimizer.lr) and the model's")
    except UserError:
        raise
    except Exception as e:
        root = _chain(e)[-1]
        first = str(root).strip().splitlines()[0] if str(root).strip() else ""
        raise UserError(f"the model fails a training step on one batch ({type(root).__name__}: {first}): check "
                        "the settings of arch and model (layer sizes, loss, optimiser)") from None


def check_data(cfg: DictConfig, prepared: set[str]) -> None:
    """MNIST present, verified and pooled (fetched once here, before the jobs need it)."""
    data_dir = cfg.data.get("data_dir") or str(default_data_dir())
    if data_dir not in prepared:
        prepare_pooled(Path(data_dir).expanduser())
        prepared.add(data_dir)


def job_overrides(config: DictConfig) -> tuple[list[list[str]], bool]:
    """The overrides of every job the basic sweeper (or ours) will launch, and True; other
    sweepers (Optuna) choose values as they go, so only their fixed settings are checked here (False)."""
    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    task = [str(o) for o in config.hydra.overrides.task]
    if not sweeper.endswith(("BasicSweeper", "CheckedSweeper")):
        fixed = [o for o, p in zip(task, OverridesParser.create().parse_overrides(task), strict=True)
                 if not p.is_sweep_override()]
        return [fixed], False
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    return expand(params + task), True


def expand(arguments: Sequence[str]) -> list[list[str]]:
    """Every combination of the arguments' values, in the basic sweeper's order (a later argument
    for the same key replaces an earlier one, in its place)."""
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    choices: dict[str, list[str]] = {}
    for override in parser.parse_overrides(list(arguments)):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise UserError(f"{override.input_line}: a sweep of every combination takes lists and ranges "
                                "of values, not intervals (those are for hparams_search=...)")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def check_job(cfg: DictConfig, built: set[str], prepared: set[str]) -> dict[str, Any]:
    """All checks of one job; returns its identity (`run_id` and `group_id` hash it)."""
    try:
        check_settings(cfg)
        identity = identity_config(cfg)
    except OmegaConfBaseException as e:
        raise UserError(f"the config does not resolve: {str(e).splitlines()[0]}") from None
    dry_build(cfg, built)
    check_data(cfg, prepared)
    return identity


def check_sweep_dir(sweep_dir: Path, jobs: dict[str, tuple[str, Path]], follows_process: set[str] = frozenset()) -> int:
    """A resumed sweep may only continue runs made by this code, and never overwrite a
    finished run of another config; returns how many of its jobs are finished already.
    `follows_process`: jobs with threads=null, whose thread count (part of their identity) is
    known only in the process that runs them, where `already_done` checks their folder."""
    done = finished_runs(sweep_dir)
    now = library_versions()
    other = [r for _, r in done.values() if fingerprint(r.get("code"), r.get("versions")) != fingerprint(
        code_version(r.get("config")), now)]
    if other:
        made_by = sorted({f"source {(r.get('code') or {}).get('source_hash')}, torch "
                          f"{(r.get('versions') or {}).get('torch')}" for r in other})
        raise UserError(
            f"{sweep_dir} holds {len(other)} finished runs made by other code or libraries ({'; '.join(made_by)[:90]}; "
            f"now source {source_hash()}, torch {now.get('torch')}): resume with what made them, or start a new "
            "hydra.sweep.dir=...")
    by_folder = {folder.resolve(): rid for rid, (folder, _) in done.items()}
    for label, (rid, folder) in jobs.items():
        held = by_folder.get(folder.resolve())
        if held is not None and held != rid and label not in follows_process:
            raise UserError(f"{folder} holds a finished run of another config than `{label}`: "
                            "give this sweep its own hydra.sweep.dir=... rather than overwrite it")
    return sum(rid in done for rid, _ in jobs.values())


def jobs_count(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


class LaunchRefused(BaseException):
    """Carries a preflight error past Hydra's callback runner, which reduces Exceptions to warnings."""


def check_sweep(config: DictConfig, overrides: list[list[str]], each_job: bool,
                compose: Callable[[list[list[str]]], list[DictConfig]]) -> list[tuple[list[str], DictConfig, str]]:
    """Compose (`compose`) and check every job of a sweep before any runs; each job's overrides,
    config and group_id (its run's identity without the seed)."""
    built: set[str] = set()
    prepared: set[str] = set()
    # read before any job is composed: this fixes `${now:...}` in the master config, whose
    # resolved values every composition copies, so each job (and the worker running it) sees this folder
    sweep_dir = Path(config.hydra.sweep.dir)
    seen: dict[str, str] = {}
    jobs: dict[str, tuple[str, Path]] = {}
    checked = []
    follows_process: set[str] = set()
    identities = []
    started = time.perf_counter()
    if each_job:  # checking takes ~40 ms a job (120: 4-5 s): say so before the console falls silent
        log.info("checking the settings of %s before %s starts", jobs_count(len(overrides)),
                 "it" if len(overrides) == 1 else "any")
    # every job composed before any is checked: an unknown option anywhere is refused first
    for job, cfg in zip(overrides, compose(overrides), strict=True):
        label = " ".join(job)
        try:
            identity = check_job(cfg, built, prepared)
        except UserError as e:
            raise UserError(f"job `{label}`: {e}") from None
        rid = run_id(identity)
        identities.append(identity)
        if cfg.get("threads") is None:
            follows_process.add(label)
        if rid in seen:
            raise UserError(f"jobs `{seen[rid]}` and `{label}` are the same run (same resolved config): "
                            "list each value once")
        seen[rid] = label
        checked.append((job, cfg, group_id(identity)))
        with contextlib.suppress(OmegaConfBaseException):  # a trial number (Optuna) is known only at launch
            jobs[label] = (rid, sweep_dir / str(cfg.hydra.sweep.subdir))
    already = check_sweep_dir(sweep_dir, jobs, follows_process) if sweep_dir.is_dir() else 0
    if each_job:
        done = "" if not already else ", all done in an earlier launch" if already == len(jobs) else \
            f", {already} of them done in an earlier launch"
        log.info("%s checked in %.1f s%s", jobs_count(len(jobs)), time.perf_counter() - started, done)
    # the code the jobs must run: each job refuses code edited since (provenance.same_code)
    progress.announce(len(jobs), already, sweep_dir, code=code_version({"jobs": identities}))
    return checked


class Preflight(Callback):
    """Registered in conf/train.yaml (`hydra.callbacks.preflight`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._check_run(config)
        except Exception as e:
            raise LaunchRefused(e) from e

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.sweeper.get("_target_") == CHECKED_SWEEPER:
            return  # it checks every job itself, with the configs it will launch
        try:
            overrides, each_job = job_overrides(config)
            loader = GlobalHydra.instance().config_loader()
            check_sweep(config, overrides, each_job,
                        lambda jobs: [loader.load_sweep_config(config, list(job)) for job in jobs])
        except Exception as e:
            raise LaunchRefused(e) from e

    def _check_run(self, config: DictConfig) -> None:
        rid = run_id(check_job(config, set(), set()))
        out = Path(config.hydra.run.dir)
        if out.is_dir():
            if (held := read_json(out / METRICS)) is None or held.get("status") != "finished":
                not_ours(out, rid)  # the user's files, or another run's: refused, nothing touched
            check_sweep_dir(out, {"this run": (rid, out)})
