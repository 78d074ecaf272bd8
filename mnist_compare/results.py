"""Per-job result files: written atomically, so a killed job never leaves one that looks finished."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

METRICS = "metrics.json"
FAILURE = "failure.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The file's content, or None when it is absent or unreadable (not a finished result)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def summarise(history: dict[str, list[float]], chooser: tuple[str, str] | None = None) -> dict[str, Any]:
    """Final-epoch figures, plus the original's best-over-epochs on the test pairs (for comparison
    with the report only: it is chosen on the test pairs). `chooser` = (monitored metric, min or
    max) of the checkpoint callback whose model is delivered instead of the last epoch's."""
    out: dict[str, Any] = {"epochs": len(history.get("test/acc", []))}
    for key, values in history.items():
        if values:
            out[key.replace("/", "_")] = values[-1]
    test_acc = history.get("test/acc", [])
    if test_acc:
        best = max(range(len(test_acc)), key=test_acc.__getitem__)
        out["best_test_acc"], out["best_epoch"] = test_acc[best], best + 1
    out["history"] = {k.replace("/", "_"): v for k, v in history.items()}
    out["selection"] = "last epoch"
    if chooser and history.get("selected/acc"):
        # The delivered model is the checkpoint chosen on validation pairs: its test figures
        # replace the last epoch's, which stay under last_epoch_*.
        monitor, mode = chooser
        values = history[monitor]
        chosen = values.index(min(values) if mode == "min" else max(values))  # the first, as the callback
        out["selection"] = f"{mode} {monitor} (epoch {chosen + 1})"
        out["val_acc"] = history["val/acc"][chosen]  # the delivered checkpoint's
        out["last_epoch_test_acc"] = out["test_acc"]
        for metric in ("acc", "loss", "aux_acc", "rule_acc"):
            out[f"test_{metric}"] = out.pop(f"selected_{metric}")
        out["history"] = {k: v for k, v in out["history"].items() if not k.startswith("selected")}
    return out
