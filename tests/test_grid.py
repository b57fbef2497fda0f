"""Grids of traced settings run as lanes: same numbers as each point alone, chunks of lanes,
the vectorised sweeper, and the checks before any compute."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import commands
from analysis import load_sweep
from sim import experiment, lanes
from sim.config import Config
from sim.distill import DistillConfig, Objective, SamplingConfig, TrainConfig, dynamic_settings
from sim.errors import ConfigError
from sim.exposure import Defense, DefenseConfig, defense_settings
from sim.grid import (DefenseGrid, DistillGrid, GridConfig, MixGrid, SamplingGrid, TRACED_KEYS,
                      TrainGrid, as_grid, points)
from sim.lanes import LanesConfig
from sim.mix import MixConfig, MixPolicy
from sim.worlds.gaussian import GaussianConfig
from sim.worlds.categorical import CategoricalConfig
from sim.worlds.digits import DigitsConfig
from sim.worlds.markov_lm import MarkovLMConfig

FRESH = Config(world=GaussianConfig(dim=2, n_samples=10), mix=MixConfig(policy=MixPolicy.fresh),
               generations=3, seeds=3, progress=False)
FRACTIONS = GridConfig(mix=MixGrid(real_fraction=[0.0, 0.5, 1.0]))


def _run(cfg: Config):
    return experiment.run(experiment.build(cfg))


def test_traced_keys_are_the_chains_dynamic_settings():
    dynamic = {"mix.real_fraction", "mix.real_fraction_decay", "filter.keep", "filter.noise",
               *dynamic_settings(DistillConfig(), SamplingConfig(), TrainConfig()),
               *defense_settings(DefenseConfig())}
    assert set(TRACED_KEYS) == dynamic


def test_points_are_the_product_with_the_last_key_fastest():
    grid = as_grid(GridConfig(sampling=SamplingGrid(temperature=[0.5, 1]),
                              distill=DistillGrid(tau=[1, 2, 4])))
    assert grid == (("sampling.temperature", (0.5, 1.0)), ("distill.tau", (1.0, 2.0, 4.0)))
    assert points(grid)[:4] == [
        {"sampling.temperature": 0.5, "distill.tau": 1.0},
        {"sampling.temperature": 0.5, "distill.tau": 2.0},
        {"sampling.temperature": 0.5, "distill.tau": 4.0},
        {"sampling.temperature": 1.0, "distill.tau": 1.0}]


def test_each_grid_point_equals_a_run_of_that_point_alone():
    grid = _run(dataclasses.replace(FRESH, grid=FRACTIONS))
    assert grid.w2_to_truth.dims == ("generation", "seed", "mix.real_fraction")
    assert list(grid["mix.real_fraction"].values) == [0.0, 0.5, 1.0]
    for fraction in (0.0, 0.5, 1.0):
        alone = _run(dataclasses.replace(
            FRESH, mix=MixConfig(policy=MixPolicy.fresh, real_fraction=fraction)))
        np.testing.assert_allclose(grid.w2_to_truth.sel({"mix.real_fraction": fraction}),
                                   alone.w2_to_truth, rtol=1e-5)
    # the points differ: all-real data does not drift, all-synthetic data does
    drift = grid.cov_logdet_ratio.isel(generation=-1).var("seed")
    assert drift.sel({"mix.real_fraction": 0.0}) > drift.sel({"mix.real_fraction": 1.0})


def test_chunks_of_lanes_give_the_same_numbers():
    cfg = dataclasses.replace(FRESH, grid=FRACTIONS)
    whole = _run(cfg)
    chunked = _run(dataclasses.replace(cfg, lanes=LanesConfig(chunk_size=4)))  # 9 = 4+4+1
    np.testing.assert_allclose(chunked.w2_to_truth, whole.w2_to_truth, rtol=1e-5)


def test_automatic_chunks_shrink_to_fit_the_memory_budget():
    cfg = dataclasses.replace(FRESH, grid=FRACTIONS, seeds=8)
    built = experiment.build(cfg)
    keys = lanes.lane_keys(0, 24)
    dyn = {k: np.full(24, v, np.float32) for k, v in built.dyn.items()}
    plan = lambda fraction: lanes.plan_chunk(  # noqa: E731
        built.chain, keys, dyn, LanesConfig(memory_fraction=fraction), lanes.Strategy.vmap, 64)
    assert plan(0.5).chunk == 24  # a small chain fits whole
    tight = plan(1e-12)  # nothing fits: one lane at a time
    assert tight.chunk == 1
    budget = 1e-12 * lanes.free_memory_bytes(lanes.jax.local_devices()[0])
    assert tight.compile(*lanes._chunk_inputs(keys, dyn, slice(0, 24), 1), 1) > budget


def test_a_sampling_filter_on_for_some_points_leaves_the_others_exact():
    """top_p = 1 through the compiled-in filter equals the run that compiles it out."""
    base = Config(world=DigitsConfig(hidden=(8,), classes=(3, 5), prior=(0.7, 0.3),
                                     pixel_noise=1.0, n_samples=200),
                  train=TrainConfig(steps=20, batch_size=16), generations=1, seeds=2,
                  progress=False)
    grid = _run(dataclasses.replace(base, grid=GridConfig(
        sampling=SamplingGrid(top_p=[0.5, 1.0]))))
    alone = _run(base)
    for name in (n for n, v in alone.data_vars.items() if "seed" in v.dims):  # not costs
        np.testing.assert_allclose(grid[name].sel({"sampling.top_p": 1.0}), alone[name],
                                   rtol=1e-5, atol=1e-6)
    # top-p 0.5 keeps only the likelier class: the argmax share, not the sampled one
    shares = grid.majority_share.isel(generation=1)
    assert (shares.sel({"sampling.top_p": 0.5}) > shares.sel({"sampling.top_p": 1.0})).all()


DIGITS = Config(world=DigitsConfig(hidden=(8,), classes=(3, 5), n_samples=200),
                distill=DistillConfig(objective=Objective.soft),
                defense=DefenseConfig(kind=Defense.logit_noise, noise_scale=1.0),
                train=TrainConfig(steps=20, batch_size=16), generations=1, seeds=2,
                progress=False)
TINY_LM = Config(world=MarkovLMConfig(n_samples=32, seq_len=8, vocab_size=8, width=16,
                                      layers=1, heads=2, eval_sequences=16),
                 defense=DefenseConfig(kind=Defense.watermark),
                 train=TrainConfig(steps=10, batch_size=8), generations=1, seeds=2,
                 progress=False)


@pytest.mark.parametrize("base,key,values,alone", [
    (DIGITS, "noise_scale", [0.0, 3.0], [0.0, 3.0]),
    pytest.param(TINY_LM, "delta", [0.0, 4.0], [4.0], marks=pytest.mark.slow),
])
def test_a_swept_defense_strength_equals_each_point_run_alone(base, key, values, alone):
    grid = _run(dataclasses.replace(base, grid=GridConfig(defense=DefenseGrid(
        **{key: values}))))
    dim = f"defense.{key}"
    for value in alone:
        single = _run(dataclasses.replace(base, defense=dataclasses.replace(
            base.defense, **{key: value})))
        for name in (n for n, v in single.data_vars.items() if "seed" in v.dims):
            np.testing.assert_allclose(grid[name].sel({dim: value}), single[name],
                                       rtol=1e-5, atol=1e-6, err_msg=name)
    # the strengths differ: a stronger defense costs the teacher more
    cost = grid.teacher_nll_cost.isel(generation=1)
    assert (cost.sel({dim: values[1]}) > cost.sel({dim: values[0]}) + 0.05).all()


@pytest.mark.parametrize("changes,message", [
    ({"grid": GridConfig(mix=MixGrid(real_fraction=[0.0, 0.5]))},
     "grid.mix.real_fraction=[0.0, 0.5] is not allowed: only with mix=fresh"),
    ({"grid": GridConfig(distill=DistillGrid(tau=[1.0, 2.0]))},
     "grid.distill.tau=[1.0, 2.0] is not allowed: only with distill=soft or distill=feature"),
    ({"grid": GridConfig(train=TrainGrid(lr=[0.1, 0.2]))},
     "grid.train.lr=[0.1, 0.2] is not allowed: only in trained worlds"),
    ({"world": CategoricalConfig(), "grid": GridConfig(train=TrainGrid(weight_decay=[0.0, 0.1]))},
     "grid.train.weight_decay=[0.0, 0.1] is not allowed: only in trained worlds"),
    ({"grid": GridConfig(sampling=SamplingGrid(temperature=[0.5, 1.0]))},
     "sampling.temperature=0.5 is not allowed: only the default 1.0 in the closed-form"),
    ({"grid": GridConfig(defense=DefenseGrid(delta=[1.0, 2.0]))},
     "grid.defense.delta=[1.0, 2.0] is not allowed: only with defense=watermark"),
    ({"grid": GridConfig(mix=MixGrid(real_fraction=[0.5, 0.5]))}, "distinct values"),
    ({"grid": GridConfig(mix=MixGrid(real_fraction=[]))}, "a non-empty list"),
    ({"lanes": LanesConfig(chunk_size=0)}, "lanes.chunk_size=0"),
])
def test_bad_grids_fail_at_build_naming_the_key(changes, message):
    cfg = dataclasses.replace(Config(world=GaussianConfig()), **changes)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        experiment.build(cfg)


def test_every_defense_strength_is_checked_as_a_single_run_would_be():
    cfg = Config(world=MarkovLMConfig(), defense=DefenseConfig(kind=Defense.watermark),
                 grid=GridConfig(defense=DefenseGrid(delta=[1.0, -2.0])))
    with pytest.raises(ConfigError, match="defense.delta=-2.0 is not allowed: a float >= 0"):
        experiment.build(cfg)


def test_every_point_is_checked_as_a_single_run_would_be():
    cfg = Config(world=MarkovLMConfig(), distill=DistillConfig(objective=Objective.soft),
                 grid=GridConfig(distill=DistillGrid(alpha=[0.5, 1.5])))
    with pytest.raises(ConfigError, match=r"distill.alpha=1.5 is not allowed: a float in \[0, 1\]"):
        experiment.build(cfg)


SWEEP = ["-m", "world=gaussian", "world.dim=2", "mix=fresh", "mix.real_fraction=0,0.5,1",
         "world.n_samples=8,16", "generations=2", "seeds=3", "progress=false"]


def _vectorised_sweep(cwd: Path) -> xr.Dataset:
    out = commands.run(cwd, *SWEEP)
    assert out.returncode == 0, out.stderr
    jobs = sorted((cwd / "runs").rglob("results.nc"))
    assert len(jobs) == 2  # one job per world.n_samples, each with 3 fractions x 3 seeds
    assert "grid.mix.real_fraction=[0.0,0.5,1.0]" in out.stdout
    return load_sweep(cwd / "runs" / "multirun")


def test_the_sweeper_runs_traced_keys_as_lanes_and_the_rest_as_jobs(tmp_path):
    ds = _vectorised_sweep(tmp_path)
    assert ds.sizes == {"generation": 3, "seed": 3, "mix.real_fraction": 3,
                        "world.n_samples": 2}


@pytest.mark.slow  # 6 more jobs, 12-15 s; each grid point's equality runs in-process above
def test_a_vectorised_sweep_equals_its_jobs_run_one_by_one(tmp_path):
    vectorised, separate = tmp_path / "vectorised", tmp_path / "separate"
    vectorised.mkdir(), separate.mkdir()
    ds = _vectorised_sweep(vectorised)
    out = commands.run(separate, *SWEEP, "hydra.sweeper.vectorise=false")
    assert out.returncode == 0, out.stderr
    assert len(list((separate / "runs").rglob("results.nc"))) == 6
    one_by_one = load_sweep(separate / "runs" / "multirun")
    np.testing.assert_allclose(one_by_one.w2_to_truth.transpose(*ds.w2_to_truth.dims),
                               ds.w2_to_truth, rtol=1e-5)


def test_a_bad_traced_value_in_a_sweep_fails_before_running(tmp_path):
    out = commands.run(tmp_path, "-m", "world=gaussian", "mix=fresh", "mix.real_fraction=0,1.5")
    assert out.returncode == 2
    assert "error: mix.real_fraction=1.5 is not allowed" in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_swept_base_seed_is_its_own_dimension(tmp_path):
    out = commands.run(tmp_path, "-m", "world=gaussian", "seed=0,1", "generations=1",
                       "seeds=2", "progress=false")
    assert out.returncode == 0, out.stderr
    ds = load_sweep(tmp_path / "runs" / "multirun")
    assert ds.sizes == {"generation": 2, "seed": 2, "base_seed": 2}
    assert not np.allclose(ds.w2_to_truth.sel(base_seed=0), ds.w2_to_truth.sel(base_seed=1))
