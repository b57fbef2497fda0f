"""OLS chains against the closed forms of Gerstgrasser et al. (2024) for a fixed design."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stats import assert_mean

from sim import experiment
from sim.config import Config
from sim.errors import ConfigError
from sim.mix import MixConfig, MixPolicy
from sim.worlds.linreg import LinregConfig, LinregWorld

WORLD = LinregConfig(dim=5, n_samples=20, noise=0.5)


def _run(policy: MixPolicy, generations: int = 10, seeds: int = 3000, real_fraction=0.0):
    cfg = Config(world=WORLD, mix=MixConfig(policy=policy, real_fraction=real_fraction),
                 generations=generations, seeds=seeds, progress=False)
    return experiment.run(experiment.build(cfg))


def _error_scales():
    """sigma^2 tr (X'X)^-1 and sigma^2 tr(X_test (X'X)^-1 X_test') / M for the world."""
    world = LinregWorld(WORLD)
    x, x_test = np.asarray(world.x_TxD, np.float64), np.asarray(world.x_test_MxD, np.float64)
    inv = np.linalg.inv(x.T @ x)
    var = WORLD.noise**2
    return var * np.trace(inv), var * np.trace(x_test @ inv @ x_test.T) / len(x_test)


def test_fit_is_ols_and_ignores_zero_weight_rows():
    world = LinregWorld(WORLD)
    real = world.sample_real(jax.random.key(0), WORLD.n_samples)
    junk = {"row": real["row"], "y": real["y"] + 100.0}
    data = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), real, junk)
    weights = jnp.r_[jnp.ones(20), jnp.zeros(20)]
    w_hat = world.fit(None, data, weights, {})
    expected = np.linalg.lstsq(np.asarray(world.x_TxD), np.asarray(real["y"]), rcond=None)[0]
    np.testing.assert_allclose(w_hat, expected, rtol=1e-4, atol=1e-5)


def test_replace_error_grows_linearly():
    weight_scale, test_scale = _error_scales()
    ds = _run(MixPolicy.replace)
    for g in (0, 5, 10):
        assert_mean(ds.weight_error.sel(generation=g), (g + 1) * weight_scale)
        assert_mean(ds.test_mse.sel(generation=g), (g + 1) * test_scale)


def test_accumulate_error_stays_bounded():
    weight_scale, test_scale = _error_scales()
    ds = _run(MixPolicy.accumulate)
    for g in (0, 5, 10):
        harmonic = sum(1 / j**2 for j in range(1, g + 2))  # < pi^2 / 6
        assert_mean(ds.weight_error.sel(generation=g), harmonic * weight_scale)
        assert_mean(ds.test_mse.sel(generation=g), harmonic * test_scale)


def test_all_fresh_real_data_is_an_independent_refit_each_generation():
    weight_scale, _ = _error_scales()
    ds = _run(MixPolicy.fresh, real_fraction=1.0)
    for g in (0, 10):
        assert_mean(ds.weight_error.sel(generation=g), weight_scale)


def test_ridge_shrinks_and_allows_short_designs():
    LinregWorld(LinregConfig(dim=5, n_samples=3, ridge=0.1))
    with pytest.raises(ConfigError, match="world.n_samples=3"):
        LinregWorld(LinregConfig(dim=5, n_samples=3))
    with pytest.raises(ConfigError, match="world.noise"):
        LinregWorld(LinregConfig(noise=-1.0))


@pytest.mark.parametrize("ridge", [0.0, 0.7, 7.0])
def test_the_fit_is_the_ridge_closed_form_on_the_weighted_rows(ridge):
    """w = (X'WX + alpha I)^-1 X'Wy, against numpy in float64 (a penalty off by any factor,
    or rows of weight 0 that still count, fail)."""
    world = LinregWorld(LinregConfig(dim=5, n_samples=20, noise=0.5, ridge=ridge))
    data = world.sample_real(jax.random.key(1), world.n_samples)
    weights = np.r_[np.ones(15), np.zeros(5)]
    w_hat = world.fit(jax.random.key(2), data, jnp.asarray(weights, jnp.float32), {})
    x, y = np.asarray(world.x_TxD, np.float64), np.asarray(data["y"], np.float64)
    xw = x * weights[:, None]
    expected = np.linalg.solve(xw.T @ x + ridge * np.eye(5), xw.T @ y)
    np.testing.assert_allclose(w_hat, expected, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("real_fraction", [0.25, 0.6])
def test_partly_fresh_chains_follow_the_exact_error_recursion(real_fraction):
    # Rows R = the first round(f n) design rows get real labels, the rest S the previous
    # model's: w_g - w = A (w_{g-1} - w) + eta_g with A = (X'X)^-1 X_S'X_S and eta_g ~
    # N(0, sigma^2 (X'X)^-1), so the error covariance obeys C_g = A C_{g-1} A' + C_0.
    world = LinregWorld(WORLD)
    x, x_test = np.asarray(world.x_TxD, np.float64), np.asarray(world.x_test_MxD, np.float64)
    inv = np.linalg.inv(x.T @ x)
    x_s = x[round(real_fraction * WORLD.n_samples):]
    a = inv @ x_s.T @ x_s
    c0 = WORLD.noise**2 * inv
    ds = _run(MixPolicy.fresh, real_fraction=real_fraction)
    c = c0
    for g in range(11):
        if g in (1, 4, 10):
            assert_mean(ds.weight_error.sel(generation=g), np.trace(c))
            assert_mean(ds.test_mse.sel(generation=g), np.trace(x_test @ c @ x_test.T)
                        / len(x_test))
        c = a @ c @ a.T + c0


def test_a_subsample_as_large_as_every_pool_is_plain_accumulation():
    generations = 3
    cfg = Config(world=WORLD, mix=MixConfig(policy=MixPolicy.accumulate_subsample,
                                            subsample_size=(generations + 1) * 20),
                 generations=generations, seeds=50, progress=False)
    subsampled = experiment.run(experiment.build(cfg))
    accumulated = _run(MixPolicy.accumulate, generations=generations, seeds=50)
    np.testing.assert_allclose(subsampled.weight_error, accumulated.weight_error, rtol=1e-5)
    smaller = experiment.run(experiment.build(Config(
        world=WORLD, mix=MixConfig(policy=MixPolicy.accumulate_subsample, subsample_size=20),
        generations=generations, seeds=50, progress=False)))
    assert not np.allclose(smaller.weight_error.isel(generation=-1),
                           accumulated.weight_error.isel(generation=-1))
