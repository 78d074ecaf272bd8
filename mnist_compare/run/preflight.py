"""Every job's settings checked before any job trains or any folder is written.

A Hydra callback: `on_run_start` and `on_multirun_start` come after composition and before
Hydra creates a run or sweep folder, so one bad value in `aux=0.5,1.5` costs nothing and
leaves nothing behind. Each job's config is composed exactly as the sweeper would compose it
(`run/compose.py`), and the sweeper and launcher use it.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

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
from mnist_compare.run.compose import compose_jobs
from mnist_compare.run.fit import build_trainer, quiet_lightning
from mnist_compare.run.identity import finished_runs, group_id, identity_config, run_id, targets
from mnist_compare.run.provenance import code_version, fingerprint, library_versions, source_hash
from mnist_compare.run.resume import not_ours

# The settings the program reads at the top level; anything else (e.g. `+aux_weight=0.5`) is a slip.
TOP_LEVEL = ("arch", "ws", "aux", "seed", "threads", "checkpoint_after_s", "fuse_seeds", "data", "model", "trainer",
             "logger", "callbacks")
MONITORED = ("val/acc", "val/loss")  # what the module logs for callbacks to monitor
LAUNCH: dict[str, Any] = {}  # mode, dir and job count of this process's launch, for its closing line
# job overrides -> its config as composed here, which hydra/sweeper=checked and hydra/launcher=parallel
# use instead of composing it again (hydra_plugins/mnist_compare_launch)
COMPOSED: dict[tuple[str, ...], DictConfig] = {}
# job overrides -> its run's group_id (its identity without the seed), for the launcher's seed cells
GROUP_IDS: dict[tuple[str, ...], str] = {}
# the launcher whose workers start while the check runs (conf/hydra/launcher/parallel.yaml)
PARALLEL_LAUNCHER = "hydra_plugins.mnist_compare_launch.plugins.ParallelLauncher"
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
    epochs = cfg.trainer.get("max_epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UserError(
            f"trainer.max_epochs={epochs!r} is not allowed: use an integer >= 1, e.g. trainer.max_epochs=50")
    lr = (cfg.model.get("optimizer") or {}).get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0):
        raise UserError(f"model.optimizer.lr={lr!r} is not allowed: use a number > 0, e.g. model.optimizer.lr=0.001")
    for name, callback in (cfg.get("callbacks") or {}).items():
        monitor = (callback or {}).get("monitor")
        if monitor is None:
            continue
        if monitor not in MONITORED:
            raise UserError(f"callbacks.{name}.monitor={monitor} is not logged: use one of {', '.join(MONITORED)}")
        if not cfg.data.get("val_pairs"):
            raise UserError(f"callbacks monitor {monitor} but data.val_pairs={cfg.data.get('val_pairs')}: "
                            "hold out validation pairs, e.g. data.val_pairs=200")


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
    """Instantiate the model (with its optimiser and scheduler), the data module (without data)
    and the trainer with its callbacks, each distinct config once, so that a wrong key, value
    or `_target_` fails here rather than in the middle of a sweep."""
    quiet_lightning()
    for where, node in (("model", cfg.model), ("data", cfg.data), ("trainer", cfg.trainer)):
        key = where + json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True, default=str)
        if where == "trainer":
            key += json.dumps(OmegaConf.to_container(OmegaConf.create(cfg.get("callbacks") or {}), resolve=True),
                              default=str)
        if key in built:
            continue
        try:
            if where == "model":
                instantiate(node, _recursive_=False).configure_optimizers()
            elif where == "data":
                instantiate(node)
            else:
                build_trainer(cfg, None)
        except UserError:
            raise
        except Exception as e:
            raise _target_error(e, where, cfg) from None
        built.add(key)


def check_data(cfg: DictConfig, prepared: set[str]) -> None:
    """MNIST present, verified and pooled (fetched once here, before the jobs need it)."""
    data_dir = cfg.data.get("data_dir") or str(default_data_dir())
    if data_dir not in prepared:
        prepare_pooled(Path(data_dir).expanduser())
        prepared.add(data_dir)


def job_overrides(config: DictConfig) -> tuple[list[list[str]], bool]:
    """The overrides of every job the basic sweeper will launch, and True; other sweepers
    (Optuna) choose values as they go, so only their fixed settings are checked here (False)."""
    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    task = [str(o) for o in config.hydra.overrides.task]
    if not sweeper.endswith(("BasicSweeper", "CheckedSweeper")):
        fixed = [o for o, p in zip(task, OverridesParser.create().parse_overrides(task), strict=True)
                 if not p.is_sweep_override()]
        return [fixed], False
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    loader = GlobalHydra.instance().config_loader()
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + task)
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for job in jobs], True


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


class Preflight(Callback):
    """Registered in conf/train.yaml (`hydra.callbacks.preflight`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._check_run(config)
        except Exception as e:
            raise LaunchRefused(e) from e

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._check_sweep(config)
        except Exception as e:  # any workers the check started are stopped by `cli`, whatever ended it
            raise LaunchRefused(e) from e

    def _check_run(self, config: DictConfig) -> None:
        rid = run_id(check_job(config, set(), set()))
        out = Path(config.hydra.run.dir)
        LAUNCH.update(mode="run", dir=out, jobs=1, start=time.time())
        if out.is_dir():
            if (held := read_json(out / METRICS)) is None or held.get("status") != "finished":
                not_ours(out, rid)  # the user's files, or another run's: refused, nothing touched
            check_sweep_dir(out, {"this run": (rid, out)})

    def _check_sweep(self, config: DictConfig) -> None:
        built: set[str] = set()
        prepared: set[str] = set()
        COMPOSED.clear()
        GROUP_IDS.clear()
        # read before any job is composed: this fixes `${now:...}` in the master config, whose
        # resolved values every composition copies, so each job (and the worker running it) sees this folder
        sweep_dir = Path(config.hydra.sweep.dir)
        seen: dict[str, str] = {}
        jobs: dict[str, tuple[str, Path]] = {}
        follows_process: set[str] = set()
        identities = []
        started, launched = time.perf_counter(), time.time()
        overrides, each_job = job_overrides(config)
        if each_job:  # checking takes ~40 ms a job (120: 4-5 s): say so before the console falls silent
            log.info("checking the settings of %s before %s starts", jobs_count(len(overrides)),
                     "it" if len(overrides) == 1 else "any")
        if config.hydra.launcher.get("_target_") == PARALLEL_LAUNCHER:  # their start overlaps the check
            from hydra_plugins.mnist_compare_launch.plugins import start_workers

            at_once = len(overrides) if each_job else int(config.hydra.sweeper.get("n_jobs") or 1)  # Optuna's batch
            start_workers(OmegaConf.to_container(config.hydra.launcher, resolve=True), at_once)
        loader = GlobalHydra.instance().config_loader()
        # every job composed before any is checked: an unknown option anywhere is refused first
        composed = list(zip(overrides, compose_jobs(loader, config, overrides), strict=True))
        if each_job:  # the checked sweeper and parallel launcher use these instead of composing again
            COMPOSED.update((tuple(job), cfg) for job, cfg in composed)
        for job, cfg in composed:
            label = " ".join(job)
            try:
                identity = check_job(cfg, built, prepared)
            except UserError as e:
                raise UserError(f"job `{label}`: {e}") from None
            rid = run_id(identity)
            identities.append(identity)
            if cfg.get("threads") is None:
                follows_process.add(label)
            if each_job:
                GROUP_IDS[tuple(job)] = group_id(identity)
            if rid in seen:
                raise UserError(f"jobs `{seen[rid]}` and `{label}` are the same run (same resolved config): "
                                "list each value once")
            seen[rid] = label
            with contextlib.suppress(OmegaConfBaseException):  # a trial number (Optuna) is known only at launch
                jobs[label] = (rid, sweep_dir / str(cfg.hydra.sweep.subdir))
        already = check_sweep_dir(sweep_dir, jobs, follows_process) if sweep_dir.is_dir() else 0
        if each_job:
            done = "" if not already else ", all done in an earlier launch" if already == len(jobs) else \
                f", {already} of them done in an earlier launch"
            log.info("%s checked in %.1f s%s", jobs_count(len(jobs)), time.perf_counter() - started, done)
        LAUNCH.update(mode="multirun", dir=sweep_dir, jobs=len(jobs), start=launched)
        # the code the jobs must run: each job refuses code edited since (provenance.same_code)
        progress.announce(len(jobs), already, code=code_version({"jobs": identities}))
