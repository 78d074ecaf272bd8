"""Every way a launch can end, as one line and an exit status (2 bad input, 130 interrupted).

What the line says about the launch (a single run or a sweep, its folder, its number of jobs)
travels with the exception that ended it (`mark`): the job's task marks what ends a run, the
sweep (the checked sweeper, or a job of any other) what ends a sweep.
"""

from __future__ import annotations

import _thread
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

from mnist_compare.errors import UserError
from mnist_compare.results import FAILURE, METRICS
from mnist_compare.run import progress
from mnist_compare.run.preflight import TOP_LEVEL, LaunchRefused, suggest

LAUNCH = "mnist_compare_launch"  # the attribute of a marked exception


def mark(e: BaseException, mode: str, where: Path, jobs: int | None) -> None:
    """Say, on the exception that ends a launch, which launch it ends (the innermost mark wins)."""
    if getattr(e, LAUNCH, None) is None:
        setattr(e, LAUNCH, {"mode": mode, "dir": str(where), "jobs": jobs})


def interrupt_not_lost(unraisable: Any) -> None:
    """`sys.unraisablehook`: a Ctrl-C that lands while a finalizer (`__del__`) runs cannot stop
    it, so Python prints an "Exception ignored" report of five lines and goes on as if no Ctrl-C
    had come (seen with Lightning's profiler, in a sweep's workers, which the Ctrl-C reaches too).
    The signal is delivered again instead: the command (or the worker's job) stops, and the
    command prints its one line. Set in the launching process (`cli`) and in each worker."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):  # from another thread, a moment later:
        again = threading.Timer(0.01, _thread.interrupt_main, (signal.SIGINT,))  # the hook is done by then
        again.daemon = True
        again.start()
        return
    sys.__unraisablehook__(unraisable)


def _missing_option(e: MissingConfigException) -> str:
    wanted = (e.missing_cfg_file or "").split("/")
    group, name = "/".join(wanted[:-1]), wanted[-1]
    if not group or not e.options:
        return f"error: {str(e).splitlines()[0]}"
    return f"error: {group}={name} is unknown: use one of {', '.join(sorted(e.options))} (what Hydra finds in " \
           "conf/ and in your --config-dir / hydra.searchpath)"


def _composition(e: ConfigCompositionException) -> str:
    text = str(e)
    if text.startswith("Could not override '"):
        key = text.split("'")[1]
        if "." not in key:
            return f"error: {key} is not a setting this program reads{suggest(key, TOP_LEVEL)}"
        return f"error: {key} is not in the config: check the spelling (use +{key}=... only for a key the " \
               "object named by its _target_ accepts)"
    return f"error: {' '.join(text.split())}"


def _grammar(e: OverrideParseException) -> str:
    """A command-line argument Hydra cannot read, in our words (Hydra's own message points to
    its 1.2 docs): what is wrong with it and how it is spelt."""
    text = str(getattr(e, "override", "") or "").strip()
    if not text:
        return f"error: {str(e).splitlines()[0]}: write each setting as key=value, e.g. aux=0.5"
    key, eq, value = text.partition("=")
    pairs = ("()", "[]", "{}")
    if not eq:
        why = "is not key=value: a space after a comma splits a sweep in two (write aux=0,0.5, no spaces), " \
              "and a value with spaces needs quotes around the whole argument ('key=a b')"
    elif value == "" or value.startswith(",") or value.endswith(",") or ",," in value:
        why = "has an empty value: separate a sweep's values with commas and no spaces, e.g. aux=0,0.5"
    elif any(value.count(a) != value.count(b) for a, b in pairs) or value.count("'") % 2 or value.count('"') % 2:
        why = "has an unclosed bracket or quote: close it, and quote the whole argument for the shell, " \
              "e.g. 'seed=range(10)' or 'arch.classifier.sizes=[20,50,2]'"
    elif not key or key.strip() != key or " " in key:
        why = "has no valid key before `=`: write key=value, e.g. aux=0.5"
    else:
        why = "cannot be read as key=value: e.g. aux=0.5, a sweep aux=0,0.5 (no spaces), 'seed=range(10)', " \
              "'arch.classifier.sizes=[20,50,2]'; quote an argument with spaces, brackets or parentheses"
    return f"error: `{text}` {why}"


def _interrupted(launch: dict[str, Any], argv: list[str]) -> str:
    where = launch.get("dir")
    if launch.get("mode") != "multirun" or where is None:
        run = f" in {where}" if where else ""
        return f"interrupted: the run{run} stopped before it finished; no {METRICS} (its failure.json says " \
               "interrupted; train.log and TensorBoard events are kept); run the same command again to train it anew"
    done = len(list(Path(where).glob(f"**/{METRICS}")))
    args = [a for a in argv if not a.startswith("hydra.sweep.dir=")]
    again = shlex.join([sys.executable, "-m", "mnist_compare.train", *args, f"hydra.sweep.dir={where}"])
    return f"interrupted: {done} of {launch.get('jobs') or '?'} runs are finished and kept in {where}; " \
           f"resume with: {again}"


def report(e: BaseException, argv: list[str]) -> tuple[str | None, int]:
    """The closing line and exit status of a command (`argv`: its arguments as typed) that `e` ended."""
    launch = getattr(e, LAUNCH, None) or {}
    if isinstance(e, LaunchRefused):
        e = e.args[0]
    if isinstance(e, SystemExit):  # --help and the like
        return None, e.code if isinstance(e.code, int) else 1
    if isinstance(e, KeyboardInterrupt):
        return _interrupted(launch, argv), 130
    if isinstance(e, UserError):
        return f"error: {e}", 2
    if isinstance(e, MissingConfigException):
        return _missing_option(e), 2
    if isinstance(e, OverrideParseException):
        return _grammar(e), 2
    if isinstance(e, ConfigCompositionException):
        return _composition(e), 2
    where, first = launch.get("dir"), str(e).strip().splitlines()[0] if str(e).strip() else ""
    if where is None:  # before any run started: Hydra's own set-up refused something
        return f"error: the launch failed before any run started ({type(e).__name__}: {first})", 1
    written = _failures_since(Path(where), launch_start())
    if not written:  # the job failed before its run began (e.g. its folder could not be made)
        return f"error: a job failed before its run started ({type(e).__name__}: {first}); nothing was recorded " \
               f"under {where}", 1
    see = written[0] if len(written) == 1 else f"the {len(written)} {FAILURE} files under {where}"
    return f"error: a run failed ({type(e).__name__}: {first}); see {see}", 1


def launch_start() -> float:
    """When this process's launch was checked (`progress.announce`); 0 where it announced none."""
    try:
        return float(json.loads(os.environ.get(progress.ENV) or "{}").get("start", 0.0))
    except (ValueError, TypeError, AttributeError):
        return 0.0


def _failures_since(where: Path, start: float) -> list[Path]:
    """The failure records this launch wrote (an earlier launch's are no news)."""
    found = []
    for path in [where / FAILURE, *where.glob(f"*/**/{FAILURE}")]:
        try:
            if path.stat().st_mtime >= start - 1:
                found.append(path)
        except OSError:
            continue
    return sorted(set(found))
