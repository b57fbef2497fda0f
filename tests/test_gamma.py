"""Gamma and chi-square draws (sim.gamma) against their laws."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import digamma, polygamma
from stats import assert_mean

from sim import gamma

N = 20_000
KS_CRITICAL = 1.95 / np.sqrt(N)  # Kolmogorov-Smirnov, p = 0.001
ALPHAS = (0.05, 0.5, 1.0, 2.5, 49.5, 5000.0)  # boosted (< 1) and not, to the huge


@pytest.fixture(scope="module")
def draws_NxA() -> np.ndarray:
    """N draws for each alpha, vmapped over keys as the Gaussian world's lanes draw."""
    keys = jax.random.split(jax.random.key(7), N)
    return np.asarray(jax.jit(jax.vmap(gamma.gamma, (0, None)))(keys, jnp.array(ALPHAS)))


@pytest.mark.parametrize("column", range(len(ALPHAS)), ids=[f"alpha={a:g}" for a in ALPHAS])
def test_draws_follow_the_gamma_law(draws_NxA: np.ndarray, column: int) -> None:
    alpha = ALPHAS[column]
    sample = draws_NxA[:, column]
    assert np.all(sample >= 0) and np.all(np.isfinite(sample))
    assert stats.kstest(sample, stats.gamma(alpha).cdf).statistic < KS_CRITICAL
    # the KS statistic is blind far out in the tails, where collapse studies look; the
    # log's mean (digamma; trigamma its variance) weighs the small values as well
    if alpha >= 0.5:  # at 0.05, 1.3% of the law lies below float32's smallest normal
        assert_mean(np.log(sample), digamma(alpha), sd=np.sqrt(polygamma(1, alpha)))


def test_draws_are_independent_across_elements_and_keys(draws_NxA: np.ndarray) -> None:
    standardised = (draws_NxA - np.array(ALPHAS)) / np.sqrt(np.array(ALPHAS))
    correlation = np.corrcoef(standardised.T)
    off_diagonal = correlation[~np.eye(len(ALPHAS), dtype=bool)]
    assert np.abs(off_diagonal).max() < 4 / np.sqrt(N)
    assert len(np.unique(draws_NxA[:, 2])) > 0.99 * N  # float32 ties aside, no lane repeats


def test_chi_square_has_its_mean_and_variance() -> None:
    dof = jnp.array([1.0, 3.0, 90.0])
    keys = jax.random.split(jax.random.key(3), N)
    sample = np.asarray(jax.jit(jax.vmap(gamma.chi_square, (0, None)))(keys, dof))
    for column, k in enumerate(np.asarray(dof)):
        assert_mean(sample[:, column], k, sd=np.sqrt(2 * k))
        assert_mean((sample[:, column] - k) ** 2, 2 * k, sd=np.sqrt(8 * k**2 + 48 * k))


def test_invalid_alphas_give_nan_without_hanging() -> None:
    out = np.asarray(gamma.gamma(jax.random.key(0), jnp.array([0.0, -1.0, jnp.nan, 2.0])))
    assert np.isnan(out[:3]).all() and np.isfinite(out[3])
