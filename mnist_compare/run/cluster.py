"""What a SLURM cluster does to a running job, turned into records a sweep can act on.

- `prepare_job` (SLURM jobs only): torch threads follow the cores SLURM gave the job
  (`cpus_per_task`), and the signals SLURM sends are recorded in the job's folder:
  SIGTERM (scancel, time limit, preemption, `scontrol requeue`) writes `failure.json` with
  `"status"` `cancelled`, `timeout`, `preempted`, `requeued` or `terminated` (asked of SLURM
  itself: scontrol, squeue, sacct), then stops the run; SIGUSR2 (submitit's `--signal=USR2@N`, the
  time-limit warning) is logged and training goes on, since the run may still finish in time.
  A requeued job starts again by itself; the others are finished by re-running the sweep.
- `resume_point` + `ResumeCheckpoint` (every run): once a run has trained `checkpoint_after_s`
  seconds, it saves `last.ckpt` in its folder after each epoch (model, optimiser, scheduler,
  loops, the metrics history and the RNG states: a resumed run repeats an uninterrupted one
  exactly); a run started again in the same folder with the same config continues from there,
  and its TensorBoard log is rewritten from the saved history, so attempts never overlap.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.trainer.states import TrainerFn

from mnist_compare.errors import UserError
from mnist_compare.results import FAILURE, METRICS, read_json, write_json
from mnist_compare.run.identity import identity_config

log = logging.getLogger("mnist_compare")

LAST = "last.ckpt"
STATE_KEY = "mnist_compare_resume"
# Short runs (the study's MLPs: 2 s, its ConvNets: ~30 s) lose little when started again and
# would pay a save per epoch; past this much training a requeue would throw away real work.
DEFAULT_CHECKPOINT_AFTER_S = 120.0
# SLURM's final job states (sacct) -> failure.json's status
STOP_STATUS = {
    "CANCELLED": "cancelled", "TIMEOUT": "timeout", "DEADLINE": "timeout", "PREEMPTED": "preempted",
    "NODE_FAIL": "node_fail", "OUT_OF_MEMORY": "out_of_memory", "BOOT_FAIL": "node_fail",
}
ACCOUNTING_WAIT_S = 5  # well within SLURM's KillWait (30 s by default) between SIGTERM and SIGKILL
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED"}

# What the running job has done so far, for the record a signal writes.
_progress: dict[str, int | None] = {"epochs": 0, "checkpoint_epochs": None}


class JobStopped(SystemExit):
    """Raised by the SIGTERM handler once the record is written. A SystemExit, so that neither
    the entry point's `except Exception` (which would record a "failed" run) nor submitit
    (which would record a result) takes it for the run's outcome."""


# ---------------------------------------------------------------- SLURM job: threads, signals


def slurm_job_id() -> str | None:
    """`<array>_<task>` for an array task (what scontrol/squeue/sacct accept), else the job id."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _ask(*command: str) -> str:
    """A SLURM command's output, or "" (command missing, failing or hanging: never block a stop)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def stop_reason(job_id: str) -> tuple[str, str]:
    """(status, SLURM's own words) for a job that was just sent SIGTERM.

    A requeued job has already counted its restart (scontrol) and is back in the queue (squeue:
    PENDING); a cancelled or timed-out one is COMPLETING there, and its final state is in
    accounting (sacct: `CANCELLED by 0`, `TIMEOUT`); without accounting, scontrol's reason
    still tells a time limit."""
    shown = dict(f.split("=", 1) for f in _ask("scontrol", "show", "job", "-o", job_id).split() if "=" in f)
    restarts = shown.get("Restarts", "")
    if restarts.isdigit() and int(restarts) > int(os.environ.get("SLURM_RESTART_COUNT") or 0):
        return "requeued", f"requeued (restart {restarts})"  # counted before this attempt is signalled
    queued = _ask("squeue", "-h", "-j", job_id, "-o", "%T")
    if queued in QUEUED:
        return "requeued", queued
    if shown.get("Reason") == "TimeLimit":
        return "timeout", "TIMEOUT"
    deadline = time.monotonic() + ACCOUNTING_WAIT_S
    while True:  # accounting may lag the controller by a moment
        state = _ask("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State").split("\n")[-1].strip()
        if state.split() and state.split()[0].rstrip("+") in STOP_STATUS:
            return STOP_STATUS[state.split()[0].rstrip("+")], state
        if not state or time.monotonic() > deadline:  # no accounting on this cluster, or no answer
            break
        time.sleep(0.2)
    return "terminated", queued or state or "SIGTERM outside SLURM's knowledge"


class _SignalRecorder:
    """The job's SIGTERM and SIGUSR2 handlers (Lightning adds its own SIGTERM handler in front
    of these during `fit`; it only notes the signal)."""

    def __init__(self, cfg: DictConfig, out_dir: Path, job_id: str) -> None:
        self.cfg, self.out_dir, self.job_id = cfg, out_dir, job_id
        self.stopping = False

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:  # SLURM signals every step of the job; the first one is recorded
            return
        if read_json(self.out_dir / METRICS) is not None:
            return  # the run has just finished: let it exit normally
        self.stopping = True
        status, state = stop_reason(self.job_id)
        epochs, saved = _progress["epochs"], _progress["checkpoint_epochs"]
        resume = f"resumes from epoch {saved}" if saved else "starts from epoch 0"
        again = "SLURM starts it again" if status == "requeued" else "re-run the sweep to finish it"
        error = f"SLURM job {self.job_id} stopped ({state}) after {epochs} epoch(s); {again}: it {resume}"
        write_json(self.out_dir / FAILURE, {
            "status": status, "error": error, "slurm_job_id": self.job_id, "slurm_state": state,
            "signal": signal.Signals(signum).name, "epochs_done": epochs, "checkpoint_epochs": saved,
            "config": OmegaConf.to_container(self.cfg, resolve=True),
        })
        log.warning("%s (%s)", error, self.out_dir / FAILURE)
        raise JobStopped(128 + signum)

    def on_sigusr2(self, signum: int, frame: FrameType | None) -> None:
        # submitit's own handler would end the run here as "failed" (Hydra's max_num_timeout=0),
        # or requeue it as "preempted" by a guess on its elapsed time; the run may still finish
        # before the limit, and if it does not, SIGTERM records a timeout.
        left = _ask("squeue", "-h", "-j", self.job_id, "-o", "%L")
        left = "none" if left in ("", "INVALID") else left
        log.warning("SLURM job %s: time limit near (SIGUSR2, time left: %s); training goes on", self.job_id, left)


def prepare_job(cfg: DictConfig, out_dir: Path) -> None:
    """On a SLURM job: threads from its cores, and the signal handlers. Elsewhere: nothing."""
    job_id = slurm_job_id()
    if job_id is None:
        return
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    elif cpus and cpus.isdigit():
        # without a CPU-binding plugin torch would start one thread per core of the whole node
        torch.set_num_threads(int(cpus))
    _progress.update(epochs=0, checkpoint_epochs=None)
    recorder = _SignalRecorder(cfg, out_dir, job_id)
    signal.signal(signal.SIGTERM, recorder.on_sigterm)
    signal.signal(signal.SIGUSR2, recorder.on_sigusr2)
    attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0) + 1
    log.info("SLURM job %s on %s, attempt %d, %d thread(s)", job_id, os.uname().nodename, attempt,
             torch.get_num_threads())


# ---------------------------------------------------------------- resume from the last epoch


def checkpoint_after_s(cfg: DictConfig) -> float | None:
    value = cfg.get("checkpoint_after_s", DEFAULT_CHECKPOINT_AFTER_S)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UserError(f"checkpoint_after_s={value!r} is not allowed: use seconds >= 0 (0: every epoch) or null")
    return float(value)


def _saved_state(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The resume state in `path`, if it can be resumed for this config; else None (and the
    file is removed, so that it is never taken up later by mistake)."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt[STATE_KEY]
    except Exception as e:  # a file cut short by a crash, or not ours
        why = f"unreadable ({type(e).__name__}: {e})"
    else:
        # checkpoints that the saved callbacks refer to (best_on_val's) must still be there
        refs = [s.get(k) for s in ckpt.get("callbacks", {}).values() if isinstance(s, dict)
                for k in ("best_model_path", "last_model_path")]
        missing = [r for r in refs if r and not Path(r).exists()]
        if state.get("config") != config:
            why = "made with another config"
        elif missing:
            why = f"refers to {missing[0]}, which is gone"
        else:
            return state
    log.warning("%s is %s: training starts from epoch 0", path, why)
    path.unlink(missing_ok=True)
    return None


def _drop_stale_events(trainer: pl.Trainer) -> None:
    """TensorBoard event files of an earlier attempt: a resumed run rewrites its history."""
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if log_dir and Path(log_dir).is_dir():
            for stale in Path(log_dir).glob("events.out.tfevents.*"):
                stale.unlink()


def resumable(cfg: DictConfig, out_dir: Path) -> bool:
    """Whether a started run left a `last.ckpt` this config can continue from (what a clean
    start must then keep: the checkpoint and the ones it refers to)."""
    if checkpoint_after_s(cfg) is None or cfg.trainer.get("fast_dev_run"):
        return False
    return _saved_state(out_dir / LAST, identity_config(cfg)) is not None


def resume_point(trainer: pl.Trainer, cfg: DictConfig, out_dir: Path) -> str | None:
    """Give `trainer` the per-epoch `last.ckpt`; return the checkpoint to pass to `fit`, if any."""
    after = checkpoint_after_s(cfg)
    _progress.update(epochs=0, checkpoint_epochs=None)
    if after is None or cfg.trainer.get("fast_dev_run"):
        return None
    path, config = out_dir / LAST, identity_config(cfg)
    state = _saved_state(path, config)
    # Appended after the Trainer is built: `enable_checkpointing: false` (the default: results go
    # to metrics.json) makes the Trainer refuse checkpoint callbacks at construction.
    trainer.callbacks.append(ResumeCheckpoint(path, after, config, state))
    _drop_stale_events(trainer)
    if state is None:
        return None
    log.info("resuming from %s: %d epoch(s) done in %.1f s by earlier attempt(s)", path, state["epochs"],
             state["trained_s"])
    return str(path)


def earlier_train_time_s(trainer: pl.Trainer) -> float:
    """Training seconds of the attempts before this one (0 for a run that did not resume)."""
    return sum(c.earlier_s for c in trainer.callbacks if isinstance(c, ResumeCheckpoint))


def job_finished(out_dir: Path) -> None:
    """metrics.json is written: the resume checkpoint has served."""
    (out_dir / LAST).unlink(missing_ok=True)
    (out_dir / f".{LAST}.tmp").unlink(missing_ok=True)  # a save a stop cut short


def _train_generator(trainer: pl.Trainer) -> torch.Generator | None:
    """The training batches' own generator (shuffling, augmentation), if they have one."""
    generator = getattr(trainer.train_dataloader, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


class ResumeCheckpoint(Checkpoint):
    """Saves `last.ckpt` at the end of each epoch once the run has trained `after_s` seconds
    (not after the last epoch: the run is about to finish), and restores what Lightning's own
    checkpoint leaves out: the metrics history and the RNG states.

    A `Checkpoint` subclass, so that Lightning calls its `on_train_epoch_end` after the
    module's, which records the epoch's training figures."""

    def __init__(self, path: Path, after_s: float, config: dict[str, Any], state: dict[str, Any] | None) -> None:
        self.path, self.after_s, self.config = path, after_s, config
        self.state = state  # what to restore, until it is restored
        self.earlier_s = float(state["trained_s"]) if state else 0.0
        self.trained_s = self.earlier_s
        self._rng: dict[str, Any] | None = None
        self._saving = False
        self._epoch_start = 0.0

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # only the resume of `fit`: `trainer.test` loading best_on_val's checkpoint must not
        # replace the history
        if self.state is None or trainer.state.fn != TrainerFn.FITTING or STATE_KEY not in checkpoint:
            return
        state, self.state = checkpoint[STATE_KEY], None
        pl_module.history = defaultdict(list, {k: list(v) for k, v in state["history"].items()})
        self._rng = state["rng"]
        _progress.update(epochs=state["epochs"], checkpoint_epochs=state["epochs"])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        history = getattr(pl_module, "history", None)
        if self._rng is None or not history:
            return
        # the earlier attempts' epochs, into this attempt's (fresh) TensorBoard file
        for epoch in range(max(len(v) for v in history.values())):
            metrics = {k: v[epoch] for k, v in history.items() if len(v) > epoch}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=epoch + 1)  # epochs counted from 1, as everywhere

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._rng is not None:  # here, not at load: nothing may draw between this and the epoch
            torch.set_rng_state(self._rng["torch"])
            if self._rng.get("cuda") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._rng["cuda"])
            if (generator := _train_generator(trainer)) is not None and self._rng.get("train") is not None:
                generator.set_state(self._rng["train"])
            self._rng = None
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trained_s += time.perf_counter() - self._epoch_start
        _progress["epochs"] = trainer.current_epoch + 1
        if self.trained_s < self.after_s or trainer.current_epoch + 1 >= trainer.max_epochs or trainer.should_stop:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._saving = True
        try:
            trainer.save_checkpoint(tmp)
        finally:
            self._saving = False
        os.replace(tmp, self.path)  # a kill during the save leaves the previous epoch's intact
        _progress["checkpoint_epochs"] = trainer.current_epoch + 1

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if not self._saving:  # another callback's checkpoint (best_on_val)
            return
        generator = _train_generator(trainer)
        checkpoint[STATE_KEY] = {
            "config": self.config,
            "epochs": trainer.current_epoch + 1,
            "trained_s": self.trained_s,
            "history": {k: list(v) for k, v in getattr(pl_module, "history", {}).items()},
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "train": generator.get_state() if generator is not None else None,
            },
        }
