"""sim.draws: the same numbers as jax.random, drawn flat; Gamma variates from their law."""

import jax
import numpy as np
import pytest
import scipy.stats

from sim import draws


@pytest.mark.parametrize("shape", [(), (10,), (16,), (45,), (100, 10), (3, 2, 5)])
def test_a_flat_draw_holds_the_numbers_of_the_shaped_one(shape):
    key = jax.random.key(7)
    np.testing.assert_array_equal(draws.normal(key, shape), jax.random.normal(key, shape))


def test_the_same_numbers_under_vmap():
    keys = jax.random.split(jax.random.key(0), 3)
    np.testing.assert_array_equal(jax.vmap(lambda k: draws.normal(k, (4, 10)))(keys),
                                  jax.vmap(lambda k: jax.random.normal(k, (4, 10)))(keys))


@pytest.mark.parametrize("shape", [(10,), (3, 2, 5)])
def test_a_flat_uniform_draw_holds_the_numbers_of_the_shaped_one(shape):
    key = jax.random.key(3)
    np.testing.assert_array_equal(draws.uniform(key, shape, minval=0.25),
                                  jax.random.uniform(key, shape, minval=0.25))


@pytest.mark.parametrize("candidates", [1, draws.CANDIDATES])
def test_gamma_draws_follow_the_gamma_law(candidates, monkeypatch):
    """Kolmogorov-Smirnov against scipy's Gamma(alpha) for alpha below 1 (the boost),
    at 1 and near the Gaussian world's chi-square halves, 4000 variates each; with one
    candidate per round, many variates need several rounds of the while loop. A correct
    sampler fails one of these 8 tests with probability below 1%."""
    monkeypatch.setattr(draws, "CANDIDATES", candidates)
    alpha = np.repeat(np.float32([0.3, 1.0, 2.5, 49.5]), 4000)
    x = np.asarray(jax.jit(draws.gamma)(jax.random.key(candidates), alpha))
    for a in np.unique(alpha):
        assert scipy.stats.kstest(x[alpha == a], "gamma", args=(a,)).pvalue > 1e-3, a


def test_a_lanes_gamma_draws_do_not_depend_on_the_other_lanes(monkeypatch):
    """Under vmap the rounds run until every lane has all its variates; a lane that has
    them keeps them, so each lane draws what it draws alone (one candidate a round: many
    rounds)."""
    monkeypatch.setattr(draws, "CANDIDATES", 1)
    keys = jax.random.split(jax.random.key(1), 3)
    alpha = np.float32([[0.5, 4.0], [1.0, 1.0], [30.0, 0.2]]).repeat(25, axis=1)
    together = jax.vmap(draws.gamma)(keys, alpha)
    for lane in range(3):
        np.testing.assert_array_equal(together[lane], draws.gamma(keys[lane], alpha[lane]))


@pytest.mark.parametrize("num", [2, 5, 16, 63])
def test_split_gives_jax_random_splits_keys(num):
    key = jax.random.key(11)
    np.testing.assert_array_equal(jax.random.key_data(draws.split(key, num)),
                                  jax.random.key_data(jax.random.split(key, num)))
