"""accel/compose.py: every job's config equal to Hydra's own composition of it, at a fraction of
the compositions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import ROOT
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnist_compare.accel.compose import compose_jobs
from mnist_compare.paths import CONF_DIR
from mnist_compare.run.preflight import job_overrides

EXAMPLES = ROOT / "examples" / "mylab" / "conf"


@pytest.fixture(scope="module")
def hydra() -> Iterator[None]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        yield


def both_ways(sweep: list[str]) -> tuple[list[DictConfig], list[DictConfig], int]:
    """(Hydra's composition of each job, ours, how many jobs ours composed in full)."""
    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration("train", sweep, run_mode=RunMode.MULTIRUN)
    jobs, each_job = job_overrides(master)
    assert each_job
    full = [loader.load_sweep_config(master, job) for job in jobs]
    calls = []
    compose = loader.load_sweep_config

    def counted(master_config: DictConfig, overrides: list[str]) -> DictConfig:
        calls.append(overrides)
        return compose(master_config, overrides)

    loader.load_sweep_config = counted  # type: ignore[method-assign]
    try:
        ours = compose_jobs(loader, master, jobs)
    finally:
        del loader.load_sweep_config
    return full, ours, len(calls)


def same(a: DictConfig, b: DictConfig) -> bool:
    """Equal as Hydra would use them: values and interpolations unresolved, flags, and the
    resolved fields a job's folder and record are named from."""
    return (OmegaConf.to_yaml(a) == OmegaConf.to_yaml(b)
            and OmegaConf.is_struct(a) == OmegaConf.is_struct(b)
            and OmegaConf.is_readonly(a.hydra) == OmegaConf.is_readonly(b.hydra)
            and a.hydra.job.override_dirname == b.hydra.job.override_dirname
            and list(a.hydra.overrides.task) == list(b.hydra.overrides.task))


@pytest.mark.parametrize(("sweep", "in_full"), [
    # the study: one composition per architecture, the 40 jobs of each differ in values only
    pytest.param(["arch=shallow,deep,conv", "ws=true,false", "aux=0,0.5", "seed=0"], 3,
                 marks=pytest.mark.slow),  # 12 jobs composed twice: the fast tier has the others
    # values of nested keys, of several types, and a fixed value beside them
    (["model.optimizer.lr=0.1,0.01", "trainer.max_epochs=2", "data.val_pairs=0,200", "threads=1",
      "trainer.precision=32-true,bf16-mixed"], 1),
    # an experiment (a group that sets values) beside the value that it sets too
    (["experiment=best", "ws=true,false", "seed=0,1"], 1),
    # groups and values of the same subtree overlap: each job composed in full
    (["arch=shallow,deep", "arch.pipe.sizes.1=100,200"], 4),
    # a key added with `+` (in full for each of its values), a key deleted with `~`, a value with
    # an interpolation, quoted strings
    (["+extra=1,2", "~logger", "aux=${seed},0.5", "seed=3", "trainer.precision='32-true','16-mixed'"], 2),
    # a user's config folder on Hydra's search path, its architecture beside ours
    ([f"hydra.searchpath=[file://{EXAMPLES}]", "arch=tiny,shallow", "ws=true,false"], 2),
])
def test_each_job_is_composed_as_hydra_composes_it(hydra, sweep, in_full):
    full, ours, composed = both_ways(sweep)
    assert len(full) == len(ours) > 1
    assert all(same(a, b) for a, b in zip(full, ours, strict=True))
    assert composed == in_full


def test_a_task_list_of_the_config_is_kept_before_the_jobs_overrides(hydra):
    """Hydra appends a job's overrides to the task list the config already holds."""
    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration("train", [], run_mode=RunMode.MULTIRUN)
    jobs = [["hydra.overrides.task=['threads=1']", f"seed={seed}"] for seed in (0, 1, 2)]
    ours = compose_jobs(loader, master, jobs)
    assert [list(c.hydra.overrides.task) for c in ours] == [["threads=1", f"seed={s}"] for s in (0, 1, 2)]
    assert all(same(loader.load_sweep_config(master, job), cfg) for job, cfg in zip(jobs, ours, strict=True))


@dataclass
class Typed:
    x: int = 0


def test_a_value_that_cannot_be_set_is_refused_with_hydras_error(hydra):
    """A typed value refuses a string: the job is composed in full, and Hydra's error is raised."""
    ConfigStore.instance().store(group="typed", name="int_x", node=Typed)
    loader = GlobalHydra.instance().config_loader()
    master = loader.load_configuration("train", [], run_mode=RunMode.MULTIRUN)
    jobs = [["+typed@box=int_x", "box.x=1"], ["+typed@box=int_x", "box.x=2"], ["+typed@box=int_x", "box.x=abc"]]
    assert [c.box.x for c in compose_jobs(loader, master, jobs[:2])] == [1, 2]
    with pytest.raises(Exception) as ours:
        compose_jobs(loader, master, jobs)
    with pytest.raises(Exception) as hydras:
        loader.load_sweep_config(master, jobs[-1])
    assert type(ours.value) is type(hydras.value) and str(ours.value) == str(hydras.value)
    assert "abc" in str(ours.value)
