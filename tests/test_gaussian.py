"""The Gaussian world against closed forms (Shumailov et al. 2024)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma, polygamma
from stats import assert_mean

from sim import experiment
from sim.config import Config
from sim.errors import ConfigError
from sim.lanes import LanesConfig
from sim.mix import MixConfig, MixPolicy
from sim.worlds.gaussian import (Covariance, Estimator, GaussianConfig, GaussianParams,
                                 GaussianWorld, fit_gaussian, true_covariance, w2_gaussians)


def test_fit_matches_numpy_and_ignores_zero_weights():
    x = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    w = np.r_[np.ones(40), np.zeros(10)].astype(np.float32)
    for ddof in (0, 1):
        mean, cov = fit_gaussian(jnp.asarray(x), jnp.asarray(w), ddof)
        np.testing.assert_allclose(mean, x[:40].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cov, np.cov(x[:40].T, ddof=ddof), rtol=1e-4, atol=1e-6)


def test_w2_closed_forms():
    # 1-d: W2^2 = (m1 - m2)^2 + (s1 - s2)^2
    w2 = w2_gaussians(jnp.array([1.0]), jnp.array([[2.0]]), jnp.array([-2.0]),
                      jnp.array([[3.0]]))
    np.testing.assert_allclose(w2, np.sqrt(9.0 + 1.0), rtol=1e-6)
    # commuting (diagonal) covariances: sum of per-axis terms
    c1, s2 = np.diag([1.0, 9.0]), np.diag([2.0, 1.0])
    w2 = w2_gaussians(jnp.zeros(2), jnp.asarray(np.sqrt(c1)), jnp.zeros(2), jnp.asarray(s2))
    np.testing.assert_allclose(w2, np.sqrt((1 - 2) ** 2 + (3 - 1) ** 2), rtol=1e-5)
    # distance to itself is zero
    w2 = w2_gaussians(jnp.ones(2), jnp.asarray(s2), jnp.ones(2), jnp.asarray(s2))
    assert float(w2) < 1e-3


def test_random_covariance_is_spd_with_requested_trace():
    sigma = true_covariance(GaussianConfig(dim=4, covariance=Covariance.random, scale=2.0))
    assert np.all(np.linalg.eigvalsh(sigma) > 0)
    np.testing.assert_allclose(np.trace(sigma), 4 * 2.0**2)


def test_generated_samples_follow_the_fit():
    world = GaussianWorld(GaussianConfig(dim=2, covariance=Covariance.random))
    cov = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    x = world.generate(jax.random.key(1), GaussianParams(jnp.array([1.0, -1.0]),
                                                        jnp.linalg.cholesky(cov)), 200_000, {})
    np.testing.assert_allclose(x.mean(0), [1.0, -1.0], atol=4 * np.sqrt(2.0 / 200_000))
    np.testing.assert_allclose(np.cov(np.asarray(x).T), cov, atol=0.03)


@pytest.mark.parametrize("dim,n", [(2, 2), (3, 1)])
def test_too_few_samples_for_a_covariance_is_rejected(dim, n):
    with pytest.raises(ConfigError, match="world.n_samples"):
        GaussianWorld(GaussianConfig(dim=dim, n_samples=n))


def _chains(estimator: Estimator, n: int = 20, dim: int = 2, generations: int = 12,
            seeds: int = 4000):
    cfg = Config(world=GaussianConfig(dim=dim, n_samples=n, estimator=estimator,
                                      covariance=Covariance.random),
                 mix=MixConfig(policy=MixPolicy.replace), lanes=LanesConfig(),
                 generations=generations, seeds=seeds, progress=False)
    return experiment.run(experiment.build(cfg))


@pytest.mark.parametrize("estimator", [Estimator.unbiased, Estimator.mle])
def test_refit_chain_matches_closed_forms(estimator):
    n, d = 20, 2
    ds = _chains(estimator, n, d)
    sigma = true_covariance(GaussianConfig(dim=d, covariance=Covariance.random))
    divisor = n - 1 if estimator is Estimator.unbiased else n
    shrink = (n - 1) / divisor  # E[Sigma_g | Sigma_{g-1}] = shrink * Sigma_{g-1}
    i = np.arange(1, d + 1)
    logdet_step = digamma((n - i) / 2).sum() + d * np.log(2) - d * np.log(divisor)
    logdet_step_var = polygamma(1, (n - i) / 2).sum()
    for g in (0, 4, 12):
        sel = ds.sel(generation=g)
        assert_mean(sel.cov_trace_ratio, shrink ** (g + 1))
        expected_mean_error = np.trace(sigma) / n * sum(shrink**j for j in range(g + 1))
        assert_mean(sel.mean_error, expected_mean_error)
        assert_mean(sel.cov_logdet_ratio, (g + 1) * logdet_step,
                    sd=np.sqrt((g + 1) * logdet_step_var))


def test_log_det_stays_exact_long_after_float32_covariances_turn_singular():
    # n = 10, d = 5: the log eigenvalues spread by about psi(4.5) - psi(2.5) = 0.69 nats a
    # generation, so after 100 generations the covariance's condition number is far past
    # float32's 1e7 and a decomposition of it returns garbage; the carried Cholesky factor
    # keeps log det a sum of exact per-generation steps.
    n, d, g, seeds = 10, 5, 100, 1000
    ds = _chains(Estimator.unbiased, n, d, generations=g, seeds=seeds)
    i = np.arange(1, d + 1)
    step = digamma((n - i) / 2).sum() + d * np.log(2) - d * np.log(n - 1)
    logdet = ds.cov_logdet_ratio.sel(generation=g)
    assert np.isfinite(logdet).all()
    assert_mean(logdet, (g + 1) * step, sd=np.sqrt((g + 1) * polygamma(1, (n - i) / 2).sum()))


def test_unbiased_refits_collapse_although_the_expected_variance_is_kept():
    # E[sigma_g^2] = sigma^2 (checked above), but log sigma_g^2 is a random walk with drift
    # psi(4.5) + log 2 - log 9 = -0.115 and variance psi'(4.5) = 0.25 per generation: after
    # 100 generations its median is about exp(-11.5) and P(sigma^2 < 0.1) is about 0.97.
    ds = _chains(Estimator.unbiased, n=10, dim=1, generations=100, seeds=2000)
    ratio = ds.cov_trace_ratio
    assert np.isfinite(ratio).all()
    medians = ratio.median("seed").values
    assert medians[100] < 1e-3 and medians[0] > 0.8
    assert (ratio.sel(generation=100) < 0.1).mean() > 0.9


def test_w2_of_non_commuting_covariances_matches_the_matrix_square_root():
    """W2^2 = |m1 - m2|^2 + tr C1 + tr C2 - 2 tr (C2^1/2 C1 C2^1/2)^1/2, against scipy's
    float64 sqrtm on random correlated covariances (a commuting-only shortcut such as
    tr(C1^1/2 C2^1/2) is wrong here by more than the tolerance)."""
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(3)
    for _ in range(5):
        a, b = rng.standard_normal((2, 3, 3))
        c1, c2 = a @ a.T + 0.1 * np.eye(3), b @ b.T + 0.1 * np.eye(3)
        m1, m2 = rng.standard_normal((2, 3))
        s2 = np.real(sqrtm(c2))
        cross = np.real(sqrtm(s2 @ c1 @ s2))
        expected = np.sqrt(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2) - 2 * np.trace(cross))
        shortcut = np.sqrt(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2)
                           - 2 * np.trace(np.real(sqrtm(c1)) @ s2))
        assert abs(shortcut - expected) > 1e-3 * expected  # the test can tell them apart
        f1 = np.linalg.cholesky(c1)
        w2 = w2_gaussians(*(jnp.asarray(v, jnp.float32) for v in (m1, f1, m2, s2)))
        np.testing.assert_allclose(w2, expected, rtol=2e-4)


def test_fidelity_metrics_tell_a_shrunk_model_from_a_wide_one():
    """Precision/recall/density/coverage (world.fidelity_points > 0): the truth scores high
    on all (coverage about 1 - 2^-k, density about 1); a model shrunk to 0.1 Sigma keeps
    precision and loses recall and coverage; one widened to 4 Sigma the reverse."""
    world = GaussianWorld(GaussianConfig(dim=2, n_samples=50, fidelity_points=500))
    keys = jax.random.split(jax.random.key(0), 16)

    def scores(scale):
        model = GaussianParams(jnp.zeros(2), jnp.sqrt(scale) * jnp.eye(2))  # scale * Sigma
        m = jax.vmap(lambda k: world.measure(k, model))(keys)
        return {name: float(m[name].mean())
                for name in ("precision", "recall", "density", "coverage")}

    truth, shrunk, wide = scores(1.0), scores(0.1), scores(4.0)
    assert truth["precision"] > 0.95 and truth["recall"] > 0.95
    assert abs(truth["coverage"] - (1 - 2.0**-5)) < 0.03 and abs(truth["density"] - 1) < 0.05
    assert shrunk["precision"] > 0.99 and shrunk["recall"] < 0.7 and shrunk["coverage"] < 0.6
    assert wide["precision"] < 0.9 and wide["recall"] > 0.99 and wide["density"] < 0.8


@pytest.mark.parametrize("curated", [False, True], ids=["refit", "data"])
def test_a_synthetic_count_schedule_shrinks_the_variance_by_its_own_factors(curated):
    """d = 1, MLE, replace: sigma_g^2 = sigma_{g-1}^2 chi^2(n_g - 1) / n_g, so
    E[sigma_g^2] = prod over h <= g of (n_h - 1) / n_h (n_0 = n, the real fit) with
    E[(sigma_g^2)^2] = prod (n_h^2 - 1) / n_h^2, and log sigma_g^2 has mean
    sum psi((n_h - 1) / 2) + log(2 / n_h) and variance sum psi'((n_h - 1) / 2). The refit
    path draws the chi^2 for a traced n_g; dedup (no continuous sample repeats) sends the
    chain through the masked rows instead."""
    from sim.curation import Filter, FilterConfig
    n, schedule, seeds = 20, (4, 12, 3), 3000
    cfg = Config(world=GaussianConfig(dim=1, n_samples=n, estimator=Estimator.mle),
                 mix=MixConfig(synthetic_schedule=schedule),
                 filter=FilterConfig(kind=Filter.dedup if curated else Filter.none),
                 generations=len(schedule), seeds=seeds, progress=False)
    built = experiment.build(cfg)
    assert built.chain.summarises is not curated
    ds = experiment.run(built)
    counts = np.array((n,) + schedule, float)
    np.testing.assert_array_equal(ds.synthetic_count.isel(seed=0), [0, *schedule])
    if curated:
        np.testing.assert_array_equal(ds.kept_fraction.sel(generation=[1, 2, 3]), 1.0)
    mean = np.cumprod((counts - 1) / counts)
    second = np.cumprod((counts**2 - 1) / counts**2)
    log_mean = np.cumsum(digamma((counts - 1) / 2) + np.log(2 / counts))
    log_var = np.cumsum(polygamma(1, (counts - 1) / 2))
    for g in range(len(counts)):
        sel = ds.sel(generation=g)
        assert_mean(sel.cov_trace_ratio, mean[g], sd=np.sqrt(second[g] - mean[g] ** 2))
        assert_mean(sel.cov_logdet_ratio, log_mean[g], sd=np.sqrt(log_var[g]))
