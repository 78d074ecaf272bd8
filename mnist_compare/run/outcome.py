"""Every way a launch can end, as one line and an exit status (2 bad input, 130 interrupted)."""

from __future__ import annotations

import _thread
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

from mnist_compare.errors import UserError
from mnist_compare.results import FAILURE, METRICS
from mnist_compare.run.preflight import LAUNCH, TOP_LEVEL, LaunchRefused, suggest


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


def _interrupted() -> str:
    where = LAUNCH.get("dir")
    if LAUNCH.get("mode") != "multirun" or where is None:
        run = f" in {where}" if where else ""
        return f"interrupted: the run{run} stopped before it finished; no {METRICS} (its failure.json says " \
               "interrupted; train.log and TensorBoard events are kept); run the same command again to train it anew"
    done = len(list(Path(where).glob(f"**/{METRICS}")))
    args = [a for a in LAUNCH.get("argv", sys.argv[1:]) if not a.startswith("hydra.sweep.dir=")]
    again = shlex.join([sys.executable, "-m", "mnist_compare.train", *args, f"hydra.sweep.dir={where}"])
    return f"interrupted: {done} of {LAUNCH.get('jobs', '?')} runs are finished and kept in {where}; " \
           f"resume with: {again}"


def report(e: BaseException) -> tuple[str | None, int]:
    if isinstance(e, LaunchRefused):
        e = e.args[0]
    if isinstance(e, SystemExit):  # --help and the like
        return None, e.code if isinstance(e.code, int) else 1
    if isinstance(e, KeyboardInterrupt):
        return _interrupted(), 130
    if isinstance(e, UserError):
        return f"error: {e}", 2
    if isinstance(e, MissingConfigException):
        return _missing_option(e), 2
    if isinstance(e, OverrideParseException):
        return f"error: {' '.join(str(e).split())}", 2
    if isinstance(e, ConfigCompositionException):
        return _composition(e), 2
    where, first = LAUNCH.get("dir"), str(e).strip().splitlines()[0] if str(e).strip() else ""
    if where is None:  # before any run started: Hydra's own set-up refused something
        return f"error: the launch failed before any run started ({type(e).__name__}: {first})", 1
    written = _failures_since(Path(where), LAUNCH.get("start", 0.0))
    if not written:  # the job failed before its run began (e.g. its folder could not be made)
        return f"error: a job failed before its run started ({type(e).__name__}: {first}); nothing was recorded " \
               f"under {where}", 1
    see = written[0] if len(written) == 1 else f"the {len(written)} {FAILURE} files under {where}"
    return f"error: a run failed ({type(e).__name__}: {first}); see {see}", 1


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
