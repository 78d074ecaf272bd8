"""docs/extending.md, run as written: a user's configs and code from outside the package."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, train

GUIDE = ROOT / "docs" / "extending.md"


def guide_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", GUIDE.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def ran(tmp_path_factory, mnist_dir):
    """Each command of the guide from a copy-free root: outputs in a temporary folder."""
    where = tmp_path_factory.mktemp("guide")
    for name in ("examples", "docs"):
        (where / name).symlink_to(ROOT / name)
    results = []
    for command in guide_commands():
        words = shlex.split(command)
        env = dict(os.environ)
        while "=" in words[0]:
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        assert words[0] == "python"
        args = [sys.executable, *words[1:]]
        if "mnist_compare.train" in words and "-m" not in words[3:] and "hydra.run.dir" not in command:
            args.append(f"hydra.run.dir=outputs/{len(results)}")
        done = subprocess.run(args, cwd=where, env=env, capture_output=True, text=True, timeout=600, check=False)
        results.append((command, done))
    return where, results


def test_the_guide_has_its_nine_examples():
    assert len(guide_commands()) == 9


@pytest.mark.slow
def test_every_command_of_the_guide_succeeds(ran):
    for command, done in ran[1]:
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"


@pytest.mark.slow
def test_external_architecture_and_code_are_labelled_and_recorded(ran):
    where, _ = ran
    records = {i: json.loads((where / "outputs" / str(i) / "metrics.json").read_text()) for i in range(3)}
    assert records[0]["arch"] == "tiny" and records[0]["n_params"] == 64 * 196 + 64 + 650 + 20 * 16 + 16 + 34
    assert records[1]["arch"] == "lenet" and records[1]["config"]["arch"]["pipe"]["_target_"] == "mylab.nets.lenet_pipe"
    assert records[2]["config"]["model"]["_target_"] == "mylab.module.WarmupAux"


@pytest.mark.slow
def test_the_collected_comparison_sets_the_variant_beside_the_study(ran):
    where, _ = ran
    runs = (where / "multirun" / "warmup-vs-table1" / "runs.csv").read_text()
    assert runs.count("mylab.module.WarmupAux") == 6
    results = (where / "multirun" / "warmup-vs-table1" / "results.md").read_text()
    assert "warmup_epochs" in results
    variants = (where / "multirun" / "warmup-vs-table1" / "variant_effects.csv").read_text().splitlines()
    assert len(variants) == 1 + 2 and all(",3," in line and "WarmupAux" in line for line in variants[1:])


@pytest.mark.slow
def test_a_pipes_own_knob_is_set_with_plus(ran):
    where, _ = ran
    config = json.loads((where / "outputs" / "5" / "metrics.json").read_text())["config"]
    assert config["arch"]["pipe"]["dropout"] == 0.3 and config["arch"]["classifier"]["dropout"] == 0.1


def _masked(row: str) -> list[str]:
    """A Markdown table row's cells, figures masked: what must not depend on the machine."""
    return [re.sub(r"[-+]?\d+\.\d+", "#", c.strip()) for c in row.strip().strip("|").split("|")]


@pytest.mark.slow
def test_the_variant_recipe_gives_the_interaction_table_the_guide_shows(ran):
    where, _ = ran
    out = where / "multirun" / "deep_drop-vs-deep"
    table = pd.read_csv(out / "interactions.csv")
    (row,) = table.to_dict("records")
    assert (row["interaction"], row["effect"], row["n_pairs"]) == ("variant x technique", "gain of aux 0.5", 3)
    assert row["settings"] == "arch: deep -> deep_drop; arch.pipe.dropout: (unset) -> 0.3"
    shown = [line for line in GUIDE.read_text().splitlines() if line.startswith("| variant x technique")]
    made = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| variant x technique")]
    assert len(shown) == len(made) == 1
    assert _masked(shown[0])[:5] == _masked(made[0])[:5] and _masked(shown[0])[8] == _masked(made[0])[8]


@pytest.mark.slow
def test_a_misspelt_external_name_lists_what_hydra_sees(mnist_dir, tmp_path):
    done = train("--config-dir", str(ROOT / "examples" / "mylab" / "conf"), "arch=tinyy", "trainer=fast_dev_run",
                 f"hydra.run.dir={tmp_path / 'x'}")
    assert done.returncode == 2 and not (tmp_path / "x").exists()
    assert "arch=tinyy is unknown: use one of best, conv, deep, deep_drop, lenet, shallow, tiny" in done.stderr


@pytest.mark.slow
def test_a_copied_arch_file_is_labelled_by_its_own_name(mnist_dir, tmp_path):
    (tmp_path / "conf" / "arch").mkdir(parents=True)
    (tmp_path / "conf" / "arch" / "wide.yaml").write_text((ROOT / "conf" / "arch" / "shallow.yaml").read_text())
    out = tmp_path / "run"
    done = train("--config-dir", str(tmp_path / "conf"), "arch=wide", "trainer=fast_dev_run", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["arch"] == "wide" and "arch=wide" in done.stdout
