"""Every world, mix and experiment config composes against the schemas and runs."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sim import experiment
from sim.cli import CONF_DIR
from sim.config import to_config

CONF = Path(CONF_DIR)
WORLDS = sorted(p.stem for p in (CONF / "world").glob("*.yaml"))
MIXES = sorted(p.stem for p in (CONF / "mix").glob("*.yaml"))
OBJECTIVES = sorted(p.stem for p in (CONF / "distill").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TINY = ["generations=1", "seeds=2", "progress=false"]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_config(compose("config", overrides=overrides))


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("mix", MIXES)
def test_world_and_mix_compose_and_run(world, mix):
    cfg = _compose([f"world={world}", f"mix={mix}", *TINY])
    ds = experiment.run(experiment.build(cfg))
    assert ds.sizes == {"generation": 2, "seed": 2}
    assert all(ds[v].notnull().all() for v in ds.data_vars)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_configs_compose_and_run(name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n#") and "Expected:" in text
    cfg = _compose([f"experiment={name}", *TINY])
    experiment.run(experiment.build(cfg))


def test_every_objective_has_a_config_file():
    from sim.distill import Objective
    assert set(OBJECTIVES) == {o.value for o in Objective}
    for name in OBJECTIVES:
        assert _compose([f"distill={name}"]).distill.objective.value == name


def test_every_world_has_a_config_file():
    from sim.worlds import WORLDS as REGISTERED
    assert set(WORLDS) == set(REGISTERED)
