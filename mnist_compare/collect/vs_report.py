"""Our groups beside the report's Table 1 (report_2019.csv), and every way they depart from its protocol.

Two tiers. A group off the report's stated protocol (`PROTOCOL`, its selection, its architecture's
size) ran another experiment: it is not set beside the report at all. A group on it is compared
with the protocol's full settings, every key of its identity config against conf/train.yaml's
defaults for its cell (`protocol_config`): precision, weight decay, gradient clipping, threads and
anything else that differs is listed at the top of vs_report.md, and only a group without any
departure is called a reproduction.
"""

from __future__ import annotations

import copy
import math
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import DictConfig

from mnist_compare.collect.fmt import DASH, pm
from mnist_compare.collect.runs import LAST_EPOCH, UNSET, cell_name, show
from mnist_compare.paths import CONF_DIR
from mnist_compare.run.identity import SEED_KEYS, flat_config, identity_config

REFERENCE = Path(__file__).with_name("report_2019.csv")
# The report's training protocol (docs/reference/original-study.md) as flattened config keys; a group
# compares with the report only when its config has every one of them, with this value.
PROTOCOL: dict[str, Any] = {
    "trainer.max_epochs": 50,
    "data.n_pairs": 1000,
    "data.test_pairs": 1000,
    "data.batch_size": 100,
    "data.shuffle": False,
    "data.normalize": False,
    "data.val_pairs": 0,
    "data.augment": None,
    "model.optimizer._target_": "torch.optim.Adam",
    "model.optimizer.lr": 0.001,
    "model.scheduler": None,
    "model.label_smoothing": 0.0,
}
# Keys of a run's identity that change neither what it trains nor what it measures (where its
# events are logged, Lightning's console summary): never a departure.
NOT_DEPARTURES = ("logger", "trainer.enable_model_summary", "trainer.log_every_n_steps")
# Interpolated copies in conf/model/compare.yaml (`pipe: ${arch.pipe}`): a departure of arch.pipe
# is listed once, under its own name, unless the copy was set apart from it.
COPIES = {"model.pipe.": "arch.pipe.", "model.classifier.": "arch.classifier."}


def reference() -> pd.DataFrame:
    table = pd.read_csv(REFERENCE, comment="#")
    table["ws"] = table["ws"].astype(str).str.lower() == "true"
    return table


@cache
def _composed(arch: str) -> DictConfig:
    """conf/train.yaml with `arch=<arch>`, composed once (beside any Hydra already initialised)."""
    saved = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("train", [f"arch={arch}"])
    finally:
        restore_gh_from_backup(saved)


def protocol_config(arch: str, ws: bool, aux: float) -> dict[str, Any]:
    """The flattened identity config of the protocol's run of a report cell (seed keys aside):
    what a run of `python -m mnist_compare.train arch=.. ws=.. aux=..` records."""
    cfg = copy.deepcopy(_composed(arch))
    cfg.ws, cfg.aux = bool(ws), float(aux)
    return flat_config(identity_config(cfg))


def _ignored(key: str) -> bool:
    return key in SEED_KEYS or any(key == k or key.startswith(k + ".") for k in NOT_DEPARTURES)


def departures(flat: dict[str, Any], protocol: dict[str, Any]) -> list[str]:
    """Every setting of a group's identity config that differs from the protocol's, as
    `key=ours (protocol: theirs)`, an absent key spelt (unset)."""
    out = []
    for key in sorted(set(flat) | set(protocol)):
        ours, theirs = (show(c[key]) if key in c else UNSET for c in (flat, protocol))
        if ours == theirs or _ignored(key):
            continue
        twin = next((src + key[len(copy_):] for copy_, src in COPIES.items() if key.startswith(copy_)), None)
        if twin is not None and (show(flat[twin]) if twin in flat else UNSET) == ours and \
                (show(protocol[twin]) if twin in protocol else UNSET) == theirs:
            continue  # the copy of an arch.* key listed under its own name
        out.append(f"{key}={ours} (protocol: {theirs})")
    return out


def _differences(flat: dict[str, Any], n_params: Any, selection: str, ref_params: int) -> list[str]:
    """How a group's settings depart from the report's stated protocol (empty: it ran the report's
    experiment and may be set beside it)."""
    out = [f"{k}={show(flat[k]) if k in flat else UNSET} (report: {show(v)})"
           for k, v in PROTOCOL.items() if k not in flat or show(flat[k]) != show(v)]
    if selection != LAST_EPOCH:
        out.append(f"selection={selection} (report: a test-pair epoch)")
    if n_params != ref_params:
        out.append(f"n_params={n_params} (report's architecture: {ref_params})")
    return out


def _signed(z: float) -> str:
    return DASH if not math.isfinite(z) else f"{z:+.1f}".replace("-0.0", "+0.0")


def compare(summary: pd.DataFrame, runs: pd.DataFrame, labels: list[str]) -> tuple[pd.DataFrame, str]:
    """(one row per group that ran the protocol, why there is none otherwise).

    diff/SE: our last-epoch mean minus the report's, over the standard error of a difference of two
    independent means, sqrt(s_report²/n_report + s_ours²/n_ours): about 2 in either direction is
    the noise band of a faithful re-run (the report's means and stds: docs/reference/original-study.md,
    Table 1).
    """
    ref = reference().set_index(["arch", "ws", "aux"])
    extra = [c for c in labels if c not in ("arch", "ws", "aux")]
    rows, off = [], []
    for g in summary.itertuples(index=False):
        key = (g.arch, bool(g.ws), float(g.aux))
        if key not in ref.index:
            continue
        r = ref.loc[key]
        first = runs[runs["group"] == g.group].iloc[0]
        differ = _differences(first["flat"], g.n_params, first["selection"], int(r["n_params"]))
        if differ:
            off.append(f"{g.context} {cell_name(g.ws, g.aux)}: {', '.join(differ)}")
            continue
        se = math.sqrt(r["std"] ** 2 / r["n"] + g.test_acc_std**2 / g.n) if g.n > 1 else math.nan
        diff = g.test_acc_mean - r["mean"]
        rows.append({
            "arch": g.arch, "cell": cell_name(g.ws, g.aux),
            **({"settings": g.context} if extra else {}),
            "departures": "; ".join(departures(first["flat"], protocol_config(g.arch, bool(g.ws), float(g.aux)))),
            "report_mean": r["mean"], "report_std": r["std"], "report_n": int(r["n"]),
            "n": g.n, "last_epoch_mean": g.test_acc_mean, "last_epoch_std": g.test_acc_std,
            "best_epoch_on_test_mean": g.best_epoch_on_test_mean, "best_epoch_on_test_std": g.best_epoch_on_test_std,
            "diff": diff, "diff_over_se": diff / se if se > 0 else math.nan,
        })
    if rows:
        table = pd.DataFrame(rows)
        return (table if (table["departures"] != "").any() else table.drop(columns="departures")), ""
    if not off:
        return pd.DataFrame(), "no group has one of the report's cells (arch shallow, deep or conv, aux 0 or 0.5)"
    more = f" (and {len(off) - 3} more)" if len(off) > 3 else ""
    return pd.DataFrame(), "no group runs the report's protocol: " + "; ".join(off[:3]) + more


def _departure_list(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numbered lines `1. key=ours (protocol: theirs): its groups`, each row's numbers or "none")."""
    short = [f"{a} {c}" for a, c in zip(table["arch"], table["cell"], strict=True)]  # unless two rows share it
    names = [f"{r['settings']} {r['cell']}" if short.count(n) > 1 else n
             for n, r in zip(short, table.to_dict("records"), strict=True)]
    found: dict[str, list[int]] = {}
    for i, text in enumerate(table["departures"].fillna("")):
        for d in filter(None, str(text).split("; ")):
            found.setdefault(d, []).append(i)
    lines = [f"{n}. {d}: " + ("every group" if len(rows) == len(table) else
                              f"{len(rows)} of the {len(table)} groups, the rows marked {n}" if len(rows) > 3 else
                              "; ".join(names[i] for i in rows))
             for n, (d, rows) in enumerate(found.items(), 1)]
    numbers = [", ".join(str(n) for n, rows in enumerate(found.values(), 1) if i in rows) or "none"
               for i in range(len(table))]
    return lines, numbers


def markdown(table: pd.DataFrame) -> str:
    """vs_report.md: the report's Table 1 beside ours, under every departure from its protocol."""
    lines, numbers = _departure_list(table) if "departures" in table else ([], [])
    view = pd.DataFrame({
        "arch": table["arch"], "cell": table["cell"],
        **({"settings": table["settings"]} if "settings" in table else {}),
        **({"departures (above)": numbers} if lines else {}),
        "report (n = 10)": [pm(m, s) for m, s in zip(table["report_mean"], table["report_std"], strict=True)],
        "n": table["n"],
        "ours, last epoch": [pm(m, s) for m, s in zip(table["last_epoch_mean"], table["last_epoch_std"],
                                                        strict=True)],
        "ours, best epoch on test (report's method, optimistic)": [
            pm(m, s) for m, s in zip(table["best_epoch_on_test_mean"], table["best_epoch_on_test_std"], strict=True)
        ],
        "diff (last - report)": [f"{d:+.4f}" for d in table["diff"]],
        "diff / SE": [_signed(z) for z in table["diff_over_se"]],
    })
    if not lines:
        head = ["# Our reproduction of the report's Table 1", ""]
    else:
        every = all(n != "none" for n in numbers)
        head = [
            "# Our runs beside the report's Table 1: " + (
                "not a reproduction" if every else "a reproduction only in the rows without a departure"),
            "",
            f"**Departures from the report's protocol.** {'Every group' if every else 'These groups'} ran the "
            "report's epochs, pairs, batches, optimiser and architecture, but not all of its settings (the "
            "protocol's: conf/train.yaml's defaults, `python -m mnist_compare.train arch=.. ws=.. aux=..`); "
            "their differences from the report measure these settings as well as the re-run:",
            "",
            *lines,
            "",
        ]
    return "\n".join([
        *head,
        "Report: EE-559 mini-project report 2019, Table 1 (mean ± sample std over 10 runs). Ours: mean ± "
        "sample std over seeds of the last-epoch test accuracy, the figure this project delivers; beside it the "
        "best epoch chosen on the test pairs, the report's method, which is optimistic and shown only to compare. "
        "diff / SE: the difference over the standard error of a difference of two means, "
        "sqrt(s_report²/n_report + s_ours²/n_ours); within about ±2 is the noise band of a faithful re-run.",
        "",
        view.to_markdown(index=False, disable_numparse=True),
        "",
    ])
