"""The gmm world: EM recovers the truth, weights are masks, metrics, robustness, validation."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from sim import smallmat
from sim.errors import ConfigError
from sim.worlds.base import Array
from sim.worlds.gmm import (GmmConfig, GmmParams, GmmWorld, _seed_means, gmm_log_prob,
                            true_means)

NO_DYN: dict = {}


def true_log_density(world: GmmWorld, x_NxD: np.ndarray) -> np.ndarray:
    """log p(x) under the truth, float64, independently of the world's own code."""
    s = world.cfg.component_scale
    dens = sum(pi * multivariate_normal(mean, s**2 * np.eye(world.cfg.dim)).pdf(x_NxD)
               for pi, mean in zip(world.true_weights_K, world.true_means_KxD))
    return np.log(dens)


def best_permutation(fitted_KxD: np.ndarray, true_KxD: np.ndarray) -> tuple[int, ...]:
    k = len(true_KxD)
    return min(itertools.permutations(range(k)),
               key=lambda perm: np.sum((fitted_KxD[list(perm)] - true_KxD) ** 2))


# Compiling an EM fit takes ~1 s on CPU, so the tests share a few compiled functions: one
# main world, vmapped fits over (LANES, POOL) pools, single fits of N_SMALL rows.
LANES = 4
POOL = 4000
N_SMALL = 200


class Jitted:
    """A world with its methods compiled once per module (eager JAX calls are slow too)."""

    def __init__(self, world: GmmWorld):
        self.world = world
        self.sample_real = jax.jit(world.sample_real, static_argnums=1)
        self.fit = jax.jit(world.fit)
        self.vfit = jax.jit(jax.vmap(world.fit, in_axes=(0, 0, 0, None)))
        self.measure = jax.jit(world.measure)
        self.vmeasure = jax.jit(jax.vmap(world.measure, in_axes=(None, 0)))
        self.generate = jax.jit(world.generate, static_argnums=2)


@pytest.fixture(scope="module")
def main() -> Jitted:
    return Jitted(GmmWorld(GmmConfig(separation=8.0, weights=(0.5, 0.3, 0.2))))


def keys(start: int, n: int = LANES) -> Array:
    return jnp.stack([jax.random.key(start + i) for i in range(n)])


def finite(tree) -> bool:
    return all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(tree))


def test_true_means_layout():
    for k, d in [(1, 2), (2, 1), (3, 1), (3, 2), (4, 3), (4, 2), (6, 2), (5, 4)]:
        means = true_means(GmmConfig(components=k, dim=d, separation=3.0, truth_seed=k + d))
        assert means.shape == (k, d)
        np.testing.assert_allclose(means.mean(0), 0.0, atol=1e-9)
        if k > 1:
            dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
            assert np.isclose(dist[~np.eye(k, dtype=bool)].min(), 3.0)
            if k <= d + 1:  # regular simplex: every pair equally far apart
                np.testing.assert_allclose(dist[~np.eye(k, dtype=bool)], 3.0)


def test_truth_metrics_and_exact_nll(main):
    w = main.world
    log_p = true_log_density(w, w.x_test_TxD)
    assert np.isclose(w.true_nll_real, -log_p.mean(), rtol=1e-10)
    metrics = main.measure(jax.random.key(0), w.truth)
    assert set(metrics) == set(w.metric_info) and set(w.headline) <= set(w.metric_info)
    assert np.isclose(float(metrics["nll_real"]), w.true_nll_real, rtol=1e-5)
    assert float(metrics["modes_covered"]) == 3.0
    entropy = -np.sum(w.true_weights_K * np.log(w.true_weights_K))
    assert np.isclose(float(metrics["weight_entropy"]), entropy, rtol=1e-5)
    np.testing.assert_allclose(w.true_weights_K, [0.5, 0.3, 0.2])


def test_fidelity_of_the_truth_and_of_a_model_that_lost_two_modes(main):
    """The true mixture's samples: density about 1, coverage about 1 - 2^-k; one that
    keeps a single component (weight 0.5 of the truth) still looks real (precision) but
    reaches about half the real points (recall, coverage)."""
    w = main.world
    truth = [main.measure(jax.random.key(i), w.truth) for i in range(8)]
    mean = lambda ms, name: float(np.mean([m[name] for m in ms]))  # noqa: E731
    assert mean(truth, "precision") > 0.9 and mean(truth, "recall") > 0.9
    assert abs(mean(truth, "density") - 1) < 0.1
    assert abs(mean(truth, "coverage") - (1 - 2.0**-w.cfg.fidelity_k)) < 0.03
    one_mode = w.truth._replace(weights_K=jnp.array([1.0, 0.0, 0.0]))
    lost = [main.measure(jax.random.key(i), one_mode) for i in range(8)]
    assert mean(lost, "precision") > 0.9
    assert mean(lost, "recall") < 0.6 and mean(lost, "coverage") < 0.6


def test_em_recovers_truth_at_generation_zero(main):
    """Four independent fits of POOL real points, each checked against its sampling error."""
    w = main.world
    n, s = POOL, w.cfg.component_scale
    x = jnp.stack([main.sample_real(k, n) for k in keys(100)])
    fits = main.vfit(keys(200), x, jnp.ones((LANES, n)), NO_DYN)
    metrics = main.vmeasure(jax.random.key(0), fits)
    pi_K = w.true_weights_K
    n_K = n * pi_K
    log_p = true_log_density(w, w.x_test_TxD)
    # free parameters of a K-component, d-dimensional mixture: an MLE's expected excess
    # held-out NLL (KL(p || q_hat)) is about k / 2n, with sd about sqrt(2k) / 2n
    k_free = 3 - 1 + 3 * w.cfg.dim + 3 * w.cfg.dim * (w.cfg.dim + 1) // 2
    for lane in range(LANES):
        params = jax.tree.map(lambda leaf: np.asarray(leaf[lane]), fits)
        perm = list(best_permutation(params.means_KxD, w.true_means_KxD))
        # means: 5 standard errors s / sqrt(n_k) per coordinate
        mean_err = np.abs(params.means_KxD[perm] - w.true_means_KxD)
        assert np.all(mean_err <= 5 * s / np.sqrt(n_K)[:, None]), mean_err
        # weights: 5 standard errors sqrt(pi (1 - pi) / n)
        weight_err = np.abs(params.weights_K[perm] - pi_K)
        assert np.all(weight_err <= 5 * np.sqrt(pi_K * (1 - pi_K) / n)), weight_err
        # covariances: the sd of a sample variance is s^2 sqrt(2 / n_k), of a covariance less
        cov_err = np.abs(params.covs_KxDxD[perm] - s**2 * np.eye(w.cfg.dim))
        assert np.all(cov_err <= 5 * s**2 * np.sqrt(2 / n_K)[:, None, None]), cov_err
        # held-out NLL: the fit's, recomputed here, and its excess over the truth's on the
        # same points (a paired difference: its standard error is that of log p - log q)
        log_q = np.log(sum(
            pi * multivariate_normal(mean, cov).pdf(w.x_test_TxD)
            for pi, mean, cov in zip(params.weights_K, params.means_KxD, params.covs_KxDxD)))
        assert float(metrics["nll_real"][lane]) == pytest.approx(-log_q.mean(), rel=1e-5)
        excess_T = log_p - log_q
        se = excess_T.std(ddof=1) / math.sqrt(len(excess_T))
        expected, spread = k_free / (2 * n), math.sqrt(2 * k_free) / (2 * n)
        assert -4 * se < excess_T.mean() < expected + 4 * (se + spread), (
            excess_T.mean(), expected, se)
        assert float(metrics["modes_covered"][lane]) == 3.0


def test_seeding_spreads_over_clusters_and_skips_zero_weight_rows():
    """Greedy k-means++: 3 tight far-apart clusters get one seed each, for every key."""
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [500.0, 500.0]])
    labels = np.repeat(np.arange(4), [200, 50, 10, 40])  # cluster 3: rows with weight 0
    x = jnp.asarray(centres[labels] + 0.1 * rng.standard_normal((300, 2)), jnp.float32)
    w = jnp.asarray(labels < 3, jnp.float32)
    seeds = jax.jit(jax.vmap(lambda k: _seed_means(k, x, w, 3)))(keys(700, 32))
    seed_labels = np.argmin(((np.asarray(seeds)[..., None, :] - centres) ** 2).sum(-1), -1)
    np.testing.assert_array_equal(np.sort(seed_labels, 1), np.broadcast_to([0, 1, 2], (32, 3)))


def test_zero_weight_rows_have_no_influence(main):
    n = N_SMALL
    data = np.asarray(main.sample_real(jax.random.key(3), POOL))[:n]
    rng = np.random.default_rng(4)
    garbage = np.concatenate([np.full((40, 2), 1e6), np.full((30, 2), np.nan),
                              np.full((30, 2), -np.inf),
                              30 * rng.standard_normal((POOL - n - 100, 2))])
    key = jax.random.key(5)
    alone = main.fit(key, data, jnp.ones(n), NO_DYN)
    assert finite(alone)

    # garbage appended, and garbage interleaved (data rows keep their relative order)
    is_data = np.zeros(POOL, bool)
    is_data[rng.choice(POOL, n, replace=False)] = True
    interleaved = np.empty((POOL, 2))
    interleaved[is_data], interleaved[~is_data] = data, garbage
    appended = np.concatenate([data, garbage])
    head = np.arange(POOL) < n
    pools = np.stack([appended, interleaved, appended, appended]).astype(np.float32)
    masks = np.stack([head, is_data, head, head | (np.arange(POOL) >= n + 100)])
    fits = main.vfit(jnp.stack([key] * LANES), pools, masks.astype(np.float32), NO_DYN)
    for lane in range(3):
        for a, b in zip(alone, fits):
            np.testing.assert_allclose(np.asarray(b[lane]), np.asarray(a), rtol=1e-4, atol=1e-4)
    # the finite garbage does matter when it is weighted (the check above is not vacuous)
    assert not np.allclose(np.asarray(fits.covs_KxDxD[3]), np.asarray(alone.covs_KxDxD),
                           atol=1e-2)


def test_fit_under_vmap_matches_single_lanes(main):
    n = N_SMALL
    data = np.stack([np.asarray(main.sample_real(k, POOL))[:n] for k in keys(300)])
    masks = (np.random.default_rng(10).uniform(size=(LANES, n)) < 0.8).astype(np.float32)
    fit_keys = keys(400)
    # pools padded with zero-weight rows to the shared pool size
    pools = np.concatenate([data, np.zeros((LANES, POOL - n, 2), np.float32)], 1)
    pool_masks = np.concatenate([masks, np.zeros((LANES, POOL - n), np.float32)], 1)
    batched = main.vfit(fit_keys, pools, pool_masks, NO_DYN)
    assert finite(batched)
    for i in range(LANES):
        lane = main.fit(fit_keys[i], data[i], masks[i], NO_DYN)
        for a, b in zip(lane, batched):
            np.testing.assert_allclose(np.asarray(b[i]), np.asarray(a), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(batched.weights_K.sum(1)), 1.0, rtol=1e-5)
    # different lanes really are different fits
    assert not np.allclose(np.asarray(batched.means_KxD[0]), np.asarray(batched.means_KxD[1]))


def test_modes_covered_drops_when_mass_collapses(main):
    w = main.world
    k, d = w.cfg.components, w.cfg.dim
    pi_K = w.true_weights_K
    thr = w.cfg.mode_mass_threshold
    weights = np.array([
        [1.0, 0.0, 0.0],  # all mass on one true component
        [0.5, 0.5, 0.0],
        # fitted mass on component 2 at half / twice mode_mass_threshold * pi_2
        [1 - pi_K[1] - thr * pi_K[2] / 2, pi_K[1], thr * pi_K[2] / 2],
        [1 - pi_K[1] - thr * pi_K[2] * 2, pi_K[1], thr * pi_K[2] * 2],
    ])
    hand_built = GmmParams(jnp.asarray(weights, jnp.float32),
                           jnp.broadcast_to(w.truth.means_KxD, (LANES, k, d)),
                           jnp.broadcast_to(jnp.eye(d), (LANES, k, d, d)))
    metrics = main.vmeasure(jax.random.key(0), hand_built)
    assert finite(metrics)
    np.testing.assert_array_equal(np.asarray(metrics["modes_covered"]), [1, 2, 2, 3])
    np.testing.assert_allclose(np.asarray(metrics["support_coverage"]), [1 / 3, 2 / 3, 2 / 3, 1])
    assert float(metrics["weight_entropy"][0]) == 0.0
    assert np.isclose(float(metrics["weight_entropy"][1]), math.log(2), rtol=1e-5)

    # K' = 1: a fit on data from a single true component covers exactly that one, and all
    # mass on one component halfway between two equally weighted true means covers both
    one = Jitted(GmmWorld(GmmConfig(fit_components=1, em_iters=5)))
    means = one.world.truth.means_KxD
    x = means[1] + jax.random.normal(jax.random.key(6), (N_SMALL, d))
    fitted = one.fit(jax.random.key(7), x, jnp.ones(N_SMALL), NO_DYN)
    assert fitted.means_KxD.shape == (1, d)
    between = GmmParams(jnp.ones(1), ((means[0] + means[1]) / 2)[None], jnp.eye(d)[None])
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), fitted, between)
    np.testing.assert_array_equal(
        np.asarray(one.vmeasure(jax.random.key(0), both)["modes_covered"]), [1, 2])


def test_generate_is_ancestral_sampling(main):
    w = main.world
    x = np.asarray(main.generate(jax.random.key(8), w.truth, 20000, NO_DYN))
    assert x.shape == (20000, w.cfg.dim)
    labels = np.argmin(((x[:, None] - w.true_means_KxD[None]) ** 2).sum(-1), 1)
    freq = np.bincount(labels, minlength=3) / len(x)
    # components 8 apart with unit scale: nearest-mean labels are wrong with p ~ 1e-4
    assert np.all(np.abs(freq - w.true_weights_K) <= 5 * np.sqrt(0.25 / len(x)) + 1e-3)
    for k in range(3):
        xk = x[labels == k]
        assert np.all(np.abs(xk.mean(0) - w.true_means_KxD[k]) <= 5 / np.sqrt(len(xk)))
        assert np.all(np.abs(xk.std(0) - 1.0) <= 5 * np.sqrt(0.5 / len(xk)) + 1e-2)


def pathological_pools() -> tuple[np.ndarray, np.ndarray]:
    """Identical points, collinear points, two distinct points, 3 weighted rows for K' = 3."""
    point = np.array([3.0, -1.0])
    line = np.linspace(-1, 1, POOL)[:, None] * np.array([1.0, 2.0])
    two_points = np.where(np.arange(POOL)[:, None] % 2 == 0, point, -point)
    spread = np.random.default_rng(12).standard_normal((POOL, 2))
    pools = np.stack([np.broadcast_to(point, (POOL, 2)), line, two_points, spread])
    masks = np.ones((LANES, POOL))
    masks[3, 3:] = 0.0
    return pools.astype(np.float32), masks.astype(np.float32)


def test_pathological_inputs_stay_finite(main):
    assert main.world.cfg.reg_covar == 1e-6
    pools, masks = pathological_pools()
    fits = main.vfit(keys(500), pools, masks, NO_DYN)
    assert finite(fits), fits
    np.testing.assert_allclose(np.asarray(fits.means_KxD[0]), np.broadcast_to(pools[0, 0], (3, 2)),
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(fits.covs_KxDxD[0]),
                               np.broadcast_to(1e-6 * np.eye(2), (3, 2, 2)), atol=1e-9)
    chols = np.asarray(smallmat.cholesky(fits.covs_KxDxD))  # the world's factorisation
    assert np.isfinite(chols).all() and (np.diagonal(chols, axis1=-2, axis2=-1) > 0).all()
    metrics = main.vmeasure(jax.random.key(0), fits)
    assert not any(bool(jnp.isnan(v).any()) for v in metrics.values()), metrics
    for lane in range(LANES):
        params = jax.tree.map(lambda leaf: leaf[lane], fits)
        assert finite(main.generate(jax.random.key(lane), params, 20000, NO_DYN))


def test_pathological_inputs_without_reg_covar_stay_finite():
    """reg_covar = 0 on data with no spread: the jitter and the keep-previous-cov guards.

    Collinear data may still leave a covariance that is singular up to float32 rounding (the
    degenerate maximum of the likelihood), but its float32 Cholesky factor stays usable.
    """
    vfit = Jitted(GmmWorld(GmmConfig(reg_covar=0.0, em_iters=20))).vfit
    pools, masks = pathological_pools()
    fits = vfit(keys(600), pools, masks, NO_DYN)
    assert finite(fits), fits
    np.testing.assert_allclose(np.asarray(fits.means_KxD[0]), np.broadcast_to(pools[0, 0], (3, 2)),
                               atol=1e-5)
    chols = np.asarray(smallmat.cholesky(fits.covs_KxDxD))  # the world's factorisation
    assert np.isfinite(chols).all(), fits.covs_KxDxD
    assert (np.diagonal(chols, axis1=-2, axis2=-1) > 0).all(), fits.covs_KxDxD
    log_p = jax.jit(jax.vmap(gmm_log_prob))(fits, pools)
    assert not bool(jnp.isnan(log_p).any())


@pytest.mark.parametrize("overrides, key", [
    ({"dim": 0}, "world.dim"),
    ({"components": 0}, "world.components"),
    ({"fit_components": -1}, "world.fit_components"),
    ({"n_samples": 2, "dim": 2}, "world.n_samples"),
    ({"n_samples": 4, "dim": 2, "fit_components": 5}, "world.n_samples"),
    ({"n_samples": 4, "dim": 2, "components": 6}, "world.n_samples"),
    ({"em_iters": 0}, "world.em_iters"),
    ({"reg_covar": -1e-6}, "world.reg_covar"),
    ({"component_scale": 0.0}, "world.component_scale"),
    ({"separation": -1.0}, "world.separation"),
    ({"weights": (0.5, 0.5)}, "world.weights"),
    ({"weights": (0.5, 0.0, 0.5)}, "world.weights"),
    ({"weights": (0.5, math.inf, 0.5)}, "world.weights"),
    ({"n_test": 0}, "world.n_test"),
    ({"mode_mass_threshold": 0.0}, "world.mode_mass_threshold"),
    ({"mode_mass_threshold": 1.5}, "world.mode_mass_threshold"),
])
def test_config_errors_are_one_line_and_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        GmmWorld(GmmConfig(**overrides))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{key}=")


def test_config_accepts_lists_and_normalises_weights():
    cfg = GmmConfig(weights=[2, 1, 1], fit_components=5)  # Hydra hands over lists
    assert cfg.weights == (2, 1, 1)
    hash(cfg)
    w = GmmWorld(cfg)
    np.testing.assert_allclose(w.true_weights_K, [0.5, 0.25, 0.25])
    assert w.fit_components == 5
    assert GmmWorld(GmmConfig(mode_mass_threshold=1.0)).cfg.mode_mass_threshold == 1.0


CORRELATED = GmmParams(weights_K=jnp.array([0.6, 0.4]),
                       means_KxD=jnp.array([[0.0, 0.0], [5.0, -3.0]]),
                       covs_KxDxD=jnp.array([[[2.0, 1.2], [1.2, 1.0]],
                                             [[0.5, -0.4], [-0.4, 1.5]]]))


def test_log_density_of_correlated_components_matches_scipy():
    """A transposed whitening (L^-T instead of L^-1) passes isotropic covariances only."""
    from scipy.stats import multivariate_normal
    x = np.random.default_rng(5).standard_normal((50, 2)) * 3
    expected = np.log(sum(
        float(CORRELATED.weights_K[k]) * multivariate_normal(
            np.asarray(CORRELATED.means_KxD[k]), np.asarray(CORRELATED.covs_KxDxD[k])).pdf(x)
        for k in range(2)))
    np.testing.assert_allclose(gmm_log_prob(CORRELATED, jnp.asarray(x, jnp.float32)),
                               expected, rtol=1e-4, atol=1e-4)


def test_samples_of_correlated_components_have_their_covariances():
    """Sampling with L^T instead of the Cholesky factor L gives the wrong covariance
    (L^T L != L L^T unless the covariance is diagonal); 4 standard errors of each entry."""
    generate = jax.jit(GmmWorld(GmmConfig(dim=2, components=2)).generate, static_argnums=2)
    n = 20000
    for k in range(2):  # all mass on component k: every sample is one of its draws
        only_k = CORRELATED._replace(weights_K=jnp.eye(2)[k])
        x = np.asarray(generate(jax.random.key(9 + k), only_k, n, NO_DYN))
        cov = np.asarray(CORRELATED.covs_KxDxD[k])
        # Var of a sample covariance entry: (S_ij^2 + S_ii S_jj) / n
        se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
        assert np.all(np.abs(np.cov(x.T) - cov) <= 4 * se)
        assert np.all(np.abs(x.mean(0) - np.asarray(CORRELATED.means_KxD[k]))
                      <= 4 * np.sqrt(np.diag(cov) / n))
