"""The command `python -m mnist_compare.train`: what surrounds the task (`mnist_compare/train.py`).

Its arguments (`logger=null` read as the group's `none`), Ctrl-C and its exit status: every
exception reaches this process whole (HYDRA_FULL_ERROR) and is reported in one line, bad input
exit 2, an interruption 130, a failed run 1 (`run/outcome.py`). It also makes the project's
sweeper and launcher known to Hydra (`hydra_plugins/mnist_compare_launch`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from hydra_plugins.mnist_compare_launch import register as register_plugins
from mnist_compare.run.outcome import interrupt_not_lost, report

# Config groups that may be switched off: `logger=null` reads as the group's `none` option
# (Hydra itself refuses null for a group), in single runs and sweeps (`logger=null,tensorboard`).
OPTIONAL_GROUPS = ("logger", "callbacks")


def _null_as_none(arg: str) -> str:
    key, _, value = arg.partition("=")
    if key.lstrip("+") not in OPTIONAL_GROUPS:
        return arg
    return f"{key}=" + ",".join("none" if v.strip() == "null" else v for v in value.split(","))


def cli(main: Callable[[], Any]) -> None:
    """Run Hydra's `main` (the task, decorated) as the command, and end with its one line and status."""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    argv = sys.argv[1:]
    sys.argv[1:] = [_null_as_none(a) for a in argv]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.unraisablehook = interrupt_not_lost
    register_plugins()  # hydra/sweeper=checked, hydra/launcher=parallel (conf/hydra)
    try:
        main()
    except BaseException as e:
        message, status = report(e, argv)
        if message:
            print(message, file=sys.stderr)
        raise SystemExit(status) from None
