"""A Gaussian mixture refitted by EM on its own samples (mode collapse; Shumailov et al. 2024).

The truth is a K-component mixture of isotropic Gaussians N(m_k, s^2 I) with weights pi_k
in d dimensions. The model is a K'-component full-covariance mixture fitted by a fixed
number of EM iterations. Refitting on finite samples makes the fitted weights drift like
allele frequencies under genetic drift, so low-weight components tend to be lost, and the
fitted covariances shrink; the held-out NLL of real data rises and true modes stop being
covered.

Layout of the true means (``true_means``), all centred at the origin and turned by a random
rotation drawn from ``truth_seed``; ``separation`` is the distance between neighbouring means:
  - d = 1: evenly spaced on the line, ``separation`` apart;
  - K <= d + 1: the vertices of a regular simplex, every pair ``separation`` apart;
  - otherwise: the vertices of a regular K-gon with side ``separation`` in a random 2-plane.

EM details (``fit_gmm``): per-sample frequency weights (rows with weight 0 have no influence at
all: their values are replaced by 0 before any arithmetic, and initialisation draws only among
weighted rows, by inverse CDF over the weighted cumulative sum, so inserting such rows anywhere
leaves the fit unchanged up to float rounding); greedy k-means++ seeding of the means (D^2
sampling, best of 2 + log K' candidates per centre, as in scikit-learn: K' distinct data points
whenever the weighted data has K' distinct values), every covariance initialised to the
weighted data covariance, uniform mixing weights; then ``em_iters`` iterations (``lax.scan``)
with log-domain responsibilities and Cholesky-based log-densities. ``reg_covar`` is added to
every covariance diagonal (as in scikit-learn), and 10 eps of mass is added to every
component's weight (also as in scikit-learn) so that log weights stay finite. A component whose
responsibility mass falls below 10 eps keeps its previous mean and covariance, and a covariance
update that is not numerically positive definite (a Cholesky pivot^2 below float eps times the
largest variance) keeps the previous covariance, so the fit never produces NaNs. If the initial
covariance is not numerically positive definite (reg_covar = 0 and data with no spread in some
direction), a jitter of 1e-5 max_i S_ii + 1e-6 is added to its diagonal. With reg_covar = 0,
data without spread can still leave covariances that are singular up to float32 rounding (the
likelihood's degenerate maximum): finite, with a usable Cholesky factor, but huge densities;
keep reg_covar > 0 for meaningful fits. The fit depends on the order of the weighted rows only
through the seeding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp

from sim import lapack, smallmat
from sim.errors import require
from sim.metrics.fidelity import precision_recall_density_coverage
from sim.worlds.gaussian import FIDELITY_INFO, fit_gaussian
from sim.worlds.base import Array, Dyn, MetricInfo, Params, WorldConfig

_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class GmmConfig(WorldConfig):
    n_samples: int = 200
    dim: int = 2  # d
    components: int = 3  # K, the number of true components
    fit_components: int = 0  # K', the number of fitted components (0 = same as components)
    separation: float = 5.0  # distance between neighbouring true means (see true_means)
    component_scale: float = 1.0  # s, the standard deviation of every true component
    weights: tuple[float, ...] = ()  # true mixing weights, normalised (empty = uniform)
    em_iters: int = 100  # EM iterations per fit
    reg_covar: float = 1e-6  # added to every fitted covariance diagonal
    n_test: int = 2000  # held-out real points for nll_real, drawn once from truth_seed
    fidelity_points: int = 500  # held-out and generated points of precision/recall/...
    fidelity_k: int = 5  # the k of their nearest-neighbour balls (sim/metrics/fidelity.py)
    mode_mass_threshold: float = 0.1  # true component k is covered if its mass >= this * pi_k
    truth_seed: int = 0  # draws the rotation of the true means and the held-out points

    def __post_init__(self):
        # Hydra hands over a list; keep the frozen config hashable.
        object.__setattr__(self, "weights", tuple(self.weights))


class GmmParams(NamedTuple):
    """One fitted mixture."""

    weights_K: Array  # mixing weights, summing to 1
    means_KxD: Array
    covs_KxDxD: Array


def _random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def true_means(cfg: GmmConfig) -> np.ndarray:
    """The true means (K x d, float64), laid out as in the module docstring."""
    k, d, sep = cfg.components, cfg.dim, cfg.separation
    if d == 1:
        return (sep * (np.arange(k) - (k - 1) / 2))[:, None]
    if k <= d + 1:
        # Vertices sep / sqrt(2) e_i of R^K are sep apart; centre them and express them in
        # an orthonormal basis of their (K - 1)-dimensional span.
        centred = sep / math.sqrt(2) * (np.eye(k) - 1.0 / k)
        basis = np.linalg.svd(centred)[2][: k - 1]
        flat = centred @ basis.T
    else:
        angles = 2 * math.pi * np.arange(k) / k
        radius = sep / (2 * math.sin(math.pi / k))
        flat = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    padded = np.zeros((k, d))
    padded[:, : flat.shape[1]] = flat
    return padded @ _random_rotation(np.random.default_rng(cfg.truth_seed), d).T


def _log_gauss_KxN(x_NxD: Array, means_KxD: Array, chol_KxDxD: Array) -> Array:
    """log N(x_n | mu_k, L_k L_k^T) for every component and row.

    Whitens with the explicit inverse of each (small) Cholesky factor: a batched matmul is
    ~100x faster on CPU than a batched triangular solve against all N rows under vmap.
    """
    d = x_NxD.shape[1]
    eye_DxD = jnp.eye(d, dtype=chol_KxDxD.dtype)
    inv_KxDxD = lapack.solve_triangular(chol_KxDxD, eye_DxD, lower=True)
    z_KxNxD = jnp.einsum("kde,kne->knd", inv_KxDxD, x_NxD[None] - means_KxD[:, None])
    half_logdet_K = jnp.log(jnp.diagonal(chol_KxDxD, axis1=1, axis2=2)).sum(1)
    return -0.5 * (z_KxNxD**2).sum(2) - half_logdet_K[:, None] - 0.5 * d * _LOG_2PI


def gmm_log_prob(params: GmmParams, x_NxD: Array) -> Array:
    """Log density of every row under a fitted mixture (N,)."""
    chol_KxDxD = smallmat.cholesky(params.covs_KxDxD)
    log_gauss_KxN = _log_gauss_KxN(x_NxD, params.means_KxD, chol_KxDxD)
    return logsumexp(jnp.log(params.weights_K)[:, None] + log_gauss_KxN, axis=0)


def _pick(p_N: Array, u_L: Array) -> Array:
    """Indices i with probability p_i / sum p, by inverse CDF; never an index with p_i = 0."""
    cdf_N = jnp.cumsum(p_N)
    above_LxN = cdf_N > u_L[:, None] * cdf_N[-1]
    last_positive = p_N.shape[0] - 1 - jnp.argmax(p_N[::-1] > 0)
    return jnp.where(above_LxN.any(1), jnp.argmax(above_LxN, 1), last_positive)


def _seed_means(key: Array, x_NxD: Array, w_N: Array, k: int) -> Array:
    """Greedy k-means++ seeding among the rows with non-zero weight.

    As in scikit-learn: each centre is the best (lowest weighted potential sum_n w_n D_n^2) of
    2 + floor(log k) candidates drawn with probability proportional to w_n D_n^2, where D_n is
    the distance of row n to the nearest centre chosen so far (the first is drawn ~ w_n).
    """
    trials = 2 + int(math.log(k))
    u_KxL = jax.random.uniform(key, (k, trials), x_NxD.dtype)

    def step(i, carry):
        means_KxD, d2_N = carry
        p_N = jnp.where(i == 0, w_N, w_N * d2_N)  # the first centre is drawn ~ w_n
        p_N = jnp.where(p_N.sum() > 0, p_N, w_N)  # every weighted row already chosen
        candidates_LxD = x_NxD[_pick(p_N, u_KxL[i])]
        d2_LxN = jnp.minimum(d2_N, ((x_NxD[None] - candidates_LxD[:, None]) ** 2).sum(2))
        best = jnp.argmin(d2_LxN @ w_N)
        return means_KxD.at[i].set(candidates_LxD[best]), d2_LxN[best]

    init = (jnp.zeros((k, x_NxD.shape[1]), x_NxD.dtype), jnp.full_like(w_N, jnp.inf))
    return lax.fori_loop(0, k, step, init)[0]


def _is_pd(chol_DxD: Array, cov_DxD: Array) -> Array:
    """Whether a Cholesky factor is usable: finite, with a condition number within precision."""
    min_pivot = jnp.diagonal(chol_DxD).min() ** 2
    eps = jnp.finfo(cov_DxD.dtype).eps
    return jnp.isfinite(chol_DxD).all() & (min_pivot > eps * jnp.diagonal(cov_DxD).max())


def fit_gmm(key: Array, x_NxD: Array, w_N: Array, k: int, iters: int,
            reg_covar: float) -> GmmParams:
    """EM for a k-component full-covariance mixture with frequency weights (see module doc)."""
    d = x_NxD.shape[1]
    dtype = x_NxD.dtype
    w_N = w_N.astype(dtype)
    x_NxD = jnp.where(w_N[:, None] > 0, x_NxD, 0.0)  # zero-weight rows: no influence at all
    eye_DxD = jnp.eye(d, dtype=dtype)
    tiny = 10 * jnp.finfo(dtype).eps
    total = w_N.sum()

    _, data_cov_DxD = fit_gaussian(x_NxD, w_N, ddof=0)
    cov_DxD = data_cov_DxD + reg_covar * eye_DxD
    chol_DxD = smallmat.cholesky(cov_DxD)
    jitter = 1e-5 * jnp.diagonal(data_cov_DxD).max() + 1e-6
    cov_DxD = jnp.where(_is_pd(chol_DxD, cov_DxD), cov_DxD, cov_DxD + jitter * eye_DxD)
    chol_DxD = smallmat.cholesky(cov_DxD)

    means_KxD = _seed_means(key, x_NxD, w_N, k)
    covs_KxDxD = jnp.broadcast_to(cov_DxD, (k, d, d))
    chols_KxDxD = jnp.broadcast_to(chol_DxD, (k, d, d))
    log_weights_K = jnp.full((k,), -math.log(k), dtype)

    def em_step(state, _):
        log_weights_K, means_KxD, covs_KxDxD, chols_KxDxD = state
        # E step
        log_joint_KxN = log_weights_K[:, None] + _log_gauss_KxN(x_NxD, means_KxD, chols_KxDxD)
        resp_KxN = jnp.exp(log_joint_KxN - logsumexp(log_joint_KxN, axis=0)) * w_N
        # M step
        mass_K = resp_KxN.sum(1)
        alive_K = mass_K > tiny
        safe_mass_K = jnp.where(alive_K, mass_K, 1.0)
        new_means_KxD = (resp_KxN @ x_NxD) / safe_mass_K[:, None]
        diff_KxNxD = x_NxD[None] - new_means_KxD[:, None]
        scatter_KxDxD = jnp.einsum("knd,kne->kde", resp_KxN[:, :, None] * diff_KxNxD, diff_KxNxD)
        new_covs_KxDxD = scatter_KxDxD / safe_mass_K[:, None, None] + reg_covar * eye_DxD
        new_covs_KxDxD = 0.5 * (new_covs_KxDxD + jnp.swapaxes(new_covs_KxDxD, 1, 2))
        new_chols_KxDxD = smallmat.cholesky(new_covs_KxDxD)
        keep_cov_K = alive_K & jax.vmap(_is_pd)(new_chols_KxDxD, new_covs_KxDxD)
        means_KxD = jnp.where(alive_K[:, None], new_means_KxD, means_KxD)
        covs_KxDxD = jnp.where(keep_cov_K[:, None, None], new_covs_KxDxD, covs_KxDxD)
        chols_KxDxD = jnp.where(keep_cov_K[:, None, None], new_chols_KxDxD, chols_KxDxD)
        log_weights_K = jnp.log(mass_K + tiny) - jnp.log(total + k * tiny)
        return (log_weights_K, means_KxD, covs_KxDxD, chols_KxDxD), None

    state = (log_weights_K, means_KxD, covs_KxDxD, chols_KxDxD)
    log_weights_K, means_KxD, covs_KxDxD, _ = lax.scan(em_step, state, None, length=iters)[0]
    weights_K = jnp.exp(log_weights_K)
    return GmmParams(weights_K / weights_K.sum(), means_KxD, covs_KxDxD)


class GmmWorld:
    """Real data from a K-component Gaussian mixture; the model is a K'-component EM fit."""

    metric_info = {
        "nll_real": MetricInfo(
            "held-out negative log-likelihood of real data", "nats",
            "mean over n_test held-out real points of -log p_hat(x) under the fitted mixture"),
        "modes_covered": MetricInfo(
            "true components covered", "",
            "number of true components k whose fitted mass sum_j pi_hat_j r_k(mu_hat_j) is at "
            "least mode_mass_threshold * pi_k, where r_k is the true posterior responsibility"),
        "support_coverage": MetricInfo(
            "share of true components covered", "",
            "modes_covered / K: the fraction of the true mixture's components that the fit "
            "still puts mass on (the support_coverage of the other worlds)"),
        "weight_entropy": MetricInfo(
            "entropy of the fitted mixing weights", "nats",
            "-sum_j pi_hat_j log pi_hat_j (log K' = all fitted components equally used; "
            "its exp is the effective number of components)"),
        **FIDELITY_INFO,
    }
    retention_of = None
    headline = ("nll_real", "modes_covered", "weight_entropy")
    cpu_lane_batch = 0  # vmap and lax.map batches measured within 6% of each other

    def __init__(self, cfg: GmmConfig):
        require(cfg.dim >= 1, "world.dim", cfg.dim, "an integer >= 1")
        require(cfg.components >= 1, "world.components", cfg.components, "an integer >= 1")
        require(cfg.fit_components >= 0, "world.fit_components", cfg.fit_components,
                "an integer >= 0 (0 = same as world.components)")
        fit_k = cfg.fit_components or cfg.components
        require(cfg.n_samples > cfg.dim, "world.n_samples", cfg.n_samples,
                f"more than world.dim={cfg.dim} samples, so the data covariance that "
                "initialises the fit is non-singular")
        require(cfg.n_samples >= fit_k, "world.n_samples", cfg.n_samples,
                f"at least the {fit_k} fitted components, one distinct point to seed each")
        require(cfg.separation >= 0, "world.separation", cfg.separation, "a float >= 0")
        require(cfg.component_scale > 0, "world.component_scale", cfg.component_scale,
                "a positive float")
        weights = tuple(float(w) for w in cfg.weights)
        require(len(weights) in (0, cfg.components)
                and all(0 < w < math.inf for w in weights),
                "world.weights", list(weights),
                f"empty (uniform) or {cfg.components} positive floats, one per true component")
        require(cfg.em_iters >= 1, "world.em_iters", cfg.em_iters, "an integer >= 1")
        require(cfg.reg_covar >= 0, "world.reg_covar", cfg.reg_covar, "a float >= 0")
        require(cfg.n_test >= 1, "world.n_test", cfg.n_test, "an integer >= 1")
        require(cfg.fidelity_k >= 1, "world.fidelity_k", cfg.fidelity_k, "an integer >= 1")
        require(cfg.fidelity_k < cfg.fidelity_points <= cfg.n_test, "world.fidelity_points",
                cfg.fidelity_points, f"an integer in (world.fidelity_k={cfg.fidelity_k}, "
                f"world.n_test={cfg.n_test}]")
        require(0 < cfg.mode_mass_threshold <= 1, "world.mode_mass_threshold",
                cfg.mode_mass_threshold, "a float in (0, 1]")
        self.cfg = cfg
        self.n_samples = cfg.n_samples
        self.fit_components = fit_k
        self.min_rows = max(cfg.dim + 1, fit_k)

        k, d, s = cfg.components, cfg.dim, cfg.component_scale
        pi_K = np.asarray(weights) / sum(weights) if weights else np.full(k, 1.0 / k)
        means_KxD = true_means(cfg)
        rng = np.random.default_rng([cfg.truth_seed, 1])
        labels_T = rng.choice(k, size=cfg.n_test, p=pi_K)
        x_test_TxD = means_KxD[labels_T] + s * rng.standard_normal((cfg.n_test, d))
        sq_KxT = ((x_test_TxD[None] - means_KxD[:, None]) ** 2).sum(-1)
        log_joint_KxT = (np.log(pi_K)[:, None] - 0.5 * sq_KxT / s**2
                         - d * np.log(s) - 0.5 * d * _LOG_2PI)
        top_T = log_joint_KxT.max(0)
        log_p_T = top_T + np.log(np.exp(log_joint_KxT - top_T).sum(0))

        self.true_weights_K = pi_K  # float64 truth, for tests and analysis
        self.true_means_KxD = means_KxD
        self.x_test_TxD = x_test_TxD
        self.true_nll_real = float(-log_p_T.mean())  # nll_real of the truth itself
        self.truth = GmmParams(jnp.asarray(pi_K, jnp.float32),
                               jnp.asarray(means_KxD, jnp.float32),
                               jnp.asarray(np.broadcast_to(s**2 * np.eye(d), (k, d, d)),
                                           jnp.float32))
        self._x_test_TxD = jnp.asarray(x_test_TxD, jnp.float32)

    def true_responsibilities(self, x_NxD: Array) -> Array:
        """r_k(x), the true mixture's posterior over its components (N x K)."""
        pi_K, means_KxD, _ = self.truth
        sq_NxK = ((x_NxD[:, None] - means_KxD[None]) ** 2).sum(-1)
        return jax.nn.softmax(jnp.log(pi_K) - 0.5 * sq_NxK / self.cfg.component_scale**2, -1)

    def sample_real(self, key: Array, n: int) -> Array:
        k_label, k_noise = jax.random.split(key)
        pi_K, means_KxD, _ = self.truth
        labels_N = jax.random.categorical(k_label, jnp.log(pi_K), shape=(n,))
        noise_NxD = jax.random.normal(k_noise, (n, self.cfg.dim))
        return means_KxD[labels_N] + self.cfg.component_scale * noise_NxD

    def fit(self, key: Array, data: Array, weights_N: Array, dyn: Dyn,
            teacher: Params = None) -> GmmParams:
        del dyn, teacher
        return fit_gmm(key, data, weights_N, self.fit_components, self.cfg.em_iters,
                       self.cfg.reg_covar)

    def truth_log_likelihood(self, x_NxD: Array) -> Array:
        """log p(x) of every sample under the true mixture (the curation's verifier)."""
        return gmm_log_prob(self.truth, x_NxD)

    def log_likelihood(self, params: GmmParams, x_NxD: Array) -> Array:
        """log p_hat(x) of every sample under a fitted mixture."""
        return gmm_log_prob(params, x_NxD)

    def generate(self, key: Array, params: GmmParams, n: int, dyn: Dyn) -> Array:
        del dyn
        k_label, k_noise = jax.random.split(key)
        labels_N = jax.random.categorical(k_label, jnp.log(params.weights_K), shape=(n,))
        chols_KxDxD = smallmat.cholesky(params.covs_KxDxD)
        noise_NxD = jax.random.normal(k_noise, (n, self.cfg.dim))
        return (params.means_KxD[labels_N]
                + jnp.einsum("nde,ne->nd", chols_KxDxD[labels_N], noise_NxD))

    def measure(self, key: Array, params: GmmParams,
                teacher: Params = None, dyn: Dyn | None = None) -> dict[str, Array]:
        del teacher
        pi_hat_J = params.weights_K
        mass_K = pi_hat_J @ self.true_responsibilities(params.means_KxD)
        covered_K = mass_K >= self.cfg.mode_mass_threshold * self.truth.weights_K
        return {
            "nll_real": -gmm_log_prob(params, self._x_test_TxD).mean(),
            "modes_covered": covered_K.sum().astype(jnp.float32),
            "support_coverage": covered_K.mean(dtype=jnp.float32),
            "weight_entropy": -(pi_hat_J * jnp.log(jnp.where(pi_hat_J > 0, pi_hat_J, 1.0))).sum(),
            **precision_recall_density_coverage(
                self._x_test_TxD[:self.cfg.fidelity_points],
                self.generate(key, params, self.cfg.fidelity_points, dyn),
                self.cfg.fidelity_k)._asdict(),
        }
