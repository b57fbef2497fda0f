"""Every world, mix and experiment config composes against the schemas and runs (every
world twice, to the same bits)."""

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from sim import experiment
from sim.cli import CONF_DIR
from sim.config import to_config
from sim.worlds.markov_lm import MarkovLMConfig
from sim.worlds.text import TextConfig

CONF = Path(CONF_DIR)
WORLDS = sorted(p.stem for p in (CONF / "world").glob("*.yaml"))
MIXES = sorted(p.stem for p in (CONF / "mix").glob("*.yaml"))
OBJECTIVES = sorted(p.stem for p in (CONF / "distill").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TINY = ["generations=1", "seeds=2", "progress=false"]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_config(compose("config", overrides=overrides))


# every mix in a fast world, every world with a static pool (replace), and a growing pool in
# one world of each model family (text shares markov_lm's code in sim/worlds/lm.py)
CASES = sorted({("gaussian", mix) for mix in MIXES} | {(world, "replace") for world in WORLDS}
               | {(world, "accumulate") for world in ("gmm", "linreg", "digits", "markov_lm")})
TRAINED = ["train.steps=3", "train.batch_size=4", "world.n_samples=32"]  # train: neural only
# a one-layer LM on short sequences compiles in half the time; the shapes are what is tested
SMALL_LM = ["world.layers=1", "world.seq_len=16", "world.eval_sequences=16"]
LM_WORLDS = ("markov_lm", "text")
# metrics of a feature a world's defaults leave off: digits' group metrics need
# world.group_share > 0, subliminal_accuracy needs world.student_targets=auxiliary
OFF_BY_DEFAULT = {"digits": {"group_accuracy_gap", "demographic_parity_gap",
                             "equalized_odds_gap", "subliminal_accuracy"}}


SLOW_CASES = {("markov_lm", "accumulate"), ("text", "replace")}  # pytest -m slow


@pytest.mark.parametrize("world,mix", [
    pytest.param(*case, marks=pytest.mark.slow) if case in SLOW_CASES else case
    for case in CASES])
def test_world_and_mix_compose_and_run(world, mix, tmp_path):
    overrides = [f"world={world}", f"mix={mix}", *TINY]
    if world in ("digits", *LM_WORLDS):
        overrides += TRAINED
    if world in LM_WORLDS:
        overrides += SMALL_LM
    if world == "text":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
        overrides.append(f"world.path={corpus}")
    cfg = _compose(overrides)
    ds = experiment.run(experiment.build(cfg))
    assert ds.sizes["generation"] == 2 and ds.sizes["seed"] == 2
    if mix == "replace":  # every world: the same config and seed give the same bits
        again = experiment.run(experiment.build(cfg))  # compiled programs come from the cache
        for name in (n for n, v in ds.data_vars.items() if "seed" in v.dims):  # not costs
            np.testing.assert_array_equal(again[name], ds[name], err_msg=name)
    # at the last generation every metric is defined, except those of a feature the
    # default config leaves off, which are NaN throughout and say so
    for v in ds.data_vars:
        last = ds[v].isel(generation=-1)
        if v in OFF_BY_DEFAULT.get(world, ()):
            assert last.isnull().all() and "NaN" in ds[v].attrs["description"], v
        else:
            assert last.notnull().all(), v


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_configs_compose_and_run(name):
    """Every experiment is validated in full; those of the fast worlds also run (the LM
    worlds' chains run above and in tests/test_lm.py, test_markov_lm.py, test_text.py)."""
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n#") and "Expected:" in text
    cfg = _compose([f"experiment={name}", *TINY, *TRAINED])
    built = experiment.build(cfg)
    if not isinstance(cfg.world, (MarkovLMConfig, TextConfig)):
        experiment.run(built)


def test_every_objective_has_a_config_file():
    from sim.distill import Objective
    assert set(OBJECTIVES) == {o.value for o in Objective}
    for name in OBJECTIVES:
        assert _compose([f"distill={name}"]).distill.objective.value == name


def test_every_world_has_a_config_file():
    from sim.worlds import WORLDS as REGISTERED
    assert set(WORLDS) == set(REGISTERED)


def test_trait_and_vendi_settings_compose_from_overrides(tmp_path):
    cfg = _compose(["world=markov_lm", "world.trait_trigger=[1,0]",
                    "world.trait_continuation=[3,8]", "world.trait_rate=0.6",
                    "world.vendi_ngram=2", "world.vendi_q=inf"])
    assert (cfg.world.trait_trigger, cfg.world.trait_continuation) == ((1, 0), (3, 8))
    world = experiment.build(cfg).chain.world
    assert set(world.relative_metrics) == {"trait_amplification"}
    assert "bag-of-2-gram" in world.metric_info["vendi"].description
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    cfg = _compose(["world=text", f"world.path={corpus}", "world.trait_trigger='the '",
                    "world.trait_continuation='very '", "world.trait_rate=0.75"])
    assert (cfg.world.trait_trigger, cfg.world.trait_continuation) == ("the ", "very ")
    assert "trait_rate" in experiment.build(cfg).chain.world.metric_info


def test_every_filter_and_teacher_has_a_config_file():
    from sim.curation import Filter
    from sim.teacher import TeacherKind
    filters = sorted(p.stem for p in (CONF / "filter").glob("*.yaml"))
    teachers = sorted(p.stem for p in (CONF / "teacher").glob("*.yaml"))
    assert set(filters) == {f.value for f in Filter}
    assert set(teachers) == {t.value for t in TeacherKind}
    for name in filters:
        assert _compose([f"filter={name}"]).filter.kind.value == name
    for name in teachers:
        assert _compose([f"teacher={name}"]).teacher.kind.value == name
