"""A d-dimensional Gaussian refitted on its own samples (Shumailov et al., Nature 2024).

The model is the fitted mean and covariance; each generation samples from the previous fit.
With the unbiased covariance estimator E[Sigma_g] = Sigma for every g, yet log det Sigma_g
drifts down linearly (a random walk with negative drift), so the fits collapse almost surely;
with the MLE, E[Sigma_g] = ((n-1)/n)^(g+1) Sigma shrinks geometrically.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sim import gamma, lapack, smallmat
from sim.errors import require
from sim.metrics.fidelity import precision_recall_density_coverage
from sim.worlds.base import Array, Dyn, MetricInfo, Params, WorldConfig


class Estimator(str, enum.Enum):
    unbiased = "unbiased"  # divide the scatter by n - 1
    mle = "mle"  # divide the scatter by n


class Covariance(str, enum.Enum):
    isotropic = "isotropic"  # Sigma = scale^2 I
    random = "random"  # a random SPD matrix from truth_seed with tr Sigma = d scale^2


@dataclass(frozen=True)
class GaussianConfig(WorldConfig):
    dim: int = 2
    estimator: Estimator = Estimator.unbiased
    covariance: Covariance = Covariance.isotropic
    scale: float = 1.0
    truth_seed: int = 0
    # precision, recall, density, coverage of fidelity_points model samples against as many
    # held-out real points (drawn once from truth_seed), k = fidelity_k; 0 = not measured
    # (O(fidelity_points^2) per lane and generation)
    fidelity_points: int = 0
    fidelity_k: int = 5


def true_covariance(cfg: GaussianConfig) -> np.ndarray:
    """The true covariance, float64."""
    d = cfg.dim
    if cfg.covariance is Covariance.isotropic:
        return cfg.scale**2 * np.eye(d)
    a = np.random.default_rng(cfg.truth_seed).standard_normal((d, d))
    sigma = a @ a.T / d + 0.1 * np.eye(d)
    return sigma * (d * cfg.scale**2 / np.trace(sigma))


def fit_gaussian(x_NxD: Array, w_N: Array, ddof: int) -> tuple[Array, Array]:
    """Weighted mean and covariance; weights are frequency weights."""
    total = w_N.sum()
    mean_D = (w_N[:, None] * x_NxD).sum(0) / total
    centred_NxD = x_NxD - mean_D
    cov_DxD = (w_N[:, None] * centred_NxD).T @ centred_NxD / (total - ddof)
    return mean_D, cov_DxD


def scatter_statistics(x_NxD: Array, w_N: Array, centre_D: Array
                       ) -> tuple[Array, Array, Array]:
    """Sufficient statistics of a weighted sample, additive over samples: the total
    weight, and the weighted sum and scatter of x - centre (a centre near the data keeps
    float32 cancellation small)."""
    y_NxD = x_NxD - centre_D
    wy_NxD = w_N[:, None] * y_NxD
    return w_N.sum(), wy_NxD.sum(0), wy_NxD.T @ y_NxD


def gaussian_from_statistics(statistics: tuple[Array, Array, Array], centre_D: Array,
                             ddof: int) -> tuple[Array, Array]:
    """The mean and covariance ``fit_gaussian`` gives, from ``scatter_statistics``."""
    total, sum_D, scatter_DxD = statistics
    offset_D = sum_D / total
    cov_DxD = (scatter_DxD - total * jnp.outer(offset_D, offset_D)) / (total - ddof)
    return centre_D + offset_D, cov_DxD


def w2_gaussians(m1_D: Array, f1_DxD: Array, m2_D: Array, c2_sqrt_DxD: Array) -> Array:
    """Wasserstein-2 distance between N(m1, C1) and N(m2, C2), given a factor F1 of
    C1 = F1 F1' (its Cholesky factor, say) and the symmetric C2^(1/2): the cross term
    tr((C2^(1/2) C1 C2^(1/2))^(1/2)) is the nuclear norm of C2^(1/2) F1."""
    cross_trace = smallmat.nuclear_norm(c2_sqrt_DxD @ f1_DxD)
    sq = (jnp.sum((m1_D - m2_D) ** 2) + jnp.sum(f1_DxD**2) + jnp.sum(c2_sqrt_DxD**2)
          - 2 * cross_trace)
    return jnp.sqrt(jnp.clip(sq, 0.0))


class GaussianParams(NamedTuple):
    """A fitted Gaussian N(mean, chol chol'), its covariance kept as the lower-triangular
    Cholesky factor: sampling needs no decomposition, log det is 2 sum log diag(chol) even
    for a covariance too close to singular for float32, and a refit on the model's own
    samples multiplies the factor by a triangular matrix (``refit``)."""

    mean_D: Array
    chol_DxD: Array


def chol_of_data(x_NxD: Array, w_N: Array, mean_D: Array, ddof: int) -> Array:
    """The Cholesky factor of the weighted covariance about ``mean_D``, from the QR
    decomposition of the weighted centred data (sqrt(w) (x - mean) = QR, so the scatter is
    R'R): no scatter matrix is formed, so a nearly singular fit loses no precision to
    squaring."""
    _, r_DxD = lapack.qr(jnp.sqrt(w_N)[:, None] * (x_NxD - mean_D))
    sign_D = jnp.where(jnp.diagonal(r_DxD) < 0, -1.0, 1.0)
    return (r_DxD.T * sign_D) / jnp.sqrt(w_N.sum() - ddof)


def bartlett(chi2_D: Array, below: Array) -> Array:
    """B lower triangular with B B' ~ Wishart(n - 1, I) (Bartlett's decomposition), from
    B_ii^2 = chi2_D[i] ~ chi^2(n - i) for i = 1..d and the d (d - 1) / 2 standard normals
    ``below`` (row by row below the diagonal)."""
    d = chi2_D.shape[0]
    rows, cols = np.tril_indices(d, -1)
    return jnp.zeros((d, d)).at[rows, cols].set(below) + jnp.diag(jnp.sqrt(chi2_D))


def gaussian_log_density(x_NxD: Array, mean_D: Array, chol_DxD: Array) -> Array:
    """log N(x | mean, L L') of every row (N,), L lower triangular; the diagonal of L is
    floored at 1e-30 in magnitude, so a collapsed model's densities stay finite."""
    diag_D = jnp.diagonal(chol_DxD)
    floored_D = jnp.where(diag_D < 0, -1.0, 1.0) * jnp.maximum(jnp.abs(diag_D), 1e-30)
    chol_DxD = chol_DxD + jnp.diag(floored_D - diag_D)
    z_DxN = lapack.solve_triangular(chol_DxD, (x_NxD - mean_D).T, lower=True)
    d = x_NxD.shape[1]
    return -0.5 * ((z_DxN**2).sum(0) + d * np.log(2 * np.pi)) - jnp.log(
        jnp.abs(floored_D)).sum()


# The k-NN quality and diversity measures (sim/metrics/fidelity.py) as results variables; a
# world's config names the points and k as fidelity_points and fidelity_k.
FIDELITY_INFO = {
    "precision": MetricInfo(
        "precision", "", "share of fidelity_points generated points inside the k-NN ball of "
        "some held-out real point (Kynkaanniemi et al. 2019; k = fidelity_k): quality"),
    "recall": MetricInfo(
        "recall", "", "share of fidelity_points held-out real points inside the k-NN ball of "
        "some generated point (Kynkaanniemi et al. 2019): diversity"),
    "density": MetricInfo(
        "density", "", "mean number of real k-NN balls holding a generated point, over k "
        "(Naeem et al. 2020): about 1 for samples of the true law"),
    "coverage": MetricInfo(
        "coverage", "", "share of real k-NN balls holding a generated point (Naeem et al. "
        "2020): about 1 - 2^-k for samples of the true law, lower as modes are lost"),
}


class GaussianWorld:
    """Real data from N(0, Sigma); the model is a fitted (mean, covariance)."""

    metric_info = {
        "w2_to_truth": MetricInfo(
            "Wasserstein-2 distance of the fitted Gaussian to the true one", "",
            "W2(N(mu_hat, Sigma_hat), N(mu, Sigma)), in the units of the data"),
        "mean_error": MetricInfo(
            "squared error of the fitted mean", "", "||mu_hat - mu||^2"),
        "cov_trace_ratio": MetricInfo(
            "covariance trace ratio", "", "tr Sigma_hat / tr Sigma (1 = no variance lost)"),
        "cov_logdet_ratio": MetricInfo(
            "log covariance determinant ratio", "nats",
            "log det Sigma_hat - log det Sigma (0 = no volume lost)"),
    }
    cpu_lane_batch = 0  # vmap measured 1.4x-2.5x faster than lax.map batches
    retention_of = None
    headline = ("w2_to_truth", "cov_trace_ratio", "cov_logdet_ratio")

    def __init__(self, cfg: GaussianConfig):
        require(cfg.dim >= 1, "world.dim", cfg.dim, "an integer >= 1")
        require(cfg.scale > 0, "world.scale", cfg.scale, "a positive float")
        require(cfg.n_samples > cfg.dim, "world.n_samples", cfg.n_samples,
                f"more than world.dim={cfg.dim} samples, so the fitted covariance is "
                "non-singular")
        require(cfg.fidelity_points == 0 or cfg.fidelity_points > cfg.fidelity_k >= 1,
                "world.fidelity_points", cfg.fidelity_points,
                f"0 (off) or an integer > world.fidelity_k={cfg.fidelity_k} >= 1")
        self.cfg = cfg
        self.n_samples = cfg.n_samples
        self.min_rows = cfg.dim + 1
        self.ddof = 1 if cfg.estimator is Estimator.unbiased else 0
        sigma = true_covariance(cfg)
        evals, evecs = np.linalg.eigh(sigma)
        self.mean_D = jnp.zeros(cfg.dim, jnp.float32)
        self.chol_DxD = jnp.asarray(np.linalg.cholesky(sigma), jnp.float32)
        self.sqrt_DxD = jnp.asarray(evecs @ np.diag(np.sqrt(evals)) @ evecs.T, jnp.float32)
        self.trace = float(np.trace(sigma))
        self.logdet = float(np.linalg.slogdet(sigma)[1])
        if cfg.fidelity_points:
            self.metric_info = {**self.metric_info, **FIDELITY_INFO}
            z = np.random.default_rng([cfg.truth_seed, 1]).standard_normal(
                (cfg.fidelity_points, cfg.dim))
            self.x_test_TxD = jnp.asarray(z @ np.linalg.cholesky(sigma).T, jnp.float32)

    def sample_real(self, key: Array, n: int) -> Array:
        return self.mean_D + jax.random.normal(key, (n, self.cfg.dim)) @ self.chol_DxD.T

    def fit(self, key: Array, data: Array, weights_N: Array, dyn: Dyn,
            teacher: Params = None) -> GaussianParams:
        del key, dyn, teacher
        mean_D = (weights_N[:, None] * data).sum(0) / weights_N.sum()
        return GaussianParams(mean_D, chol_of_data(data, weights_N, mean_D, self.ddof))

    def statistics(self, data: Array, weights_N: Array) -> tuple[Array, Array, Array]:
        """Sufficient statistics of weighted data (additive: an accumulating chain keeps
        their running sum instead of its whole pool)."""
        return scatter_statistics(data, weights_N, self.mean_D)

    def fit_statistics(self, statistics: tuple[Array, Array, Array]) -> GaussianParams:
        """``fit`` from the summed ``statistics`` of its data (under mix=accumulate, whose
        pool holds generation 0's real data, so the covariance is positive definite)."""
        mean_D, cov_DxD = gaussian_from_statistics(statistics, self.mean_D, self.ddof)
        return GaussianParams(mean_D, smallmat.cholesky(cov_DxD))

    def _own_sample(self, key: Array, params: GaussianParams, n: int
                    ) -> tuple[Array, Array]:
        """The mean offset from the truth's mean and the scatter's factor of n samples of
        the model, drawn directly in O(d^2): the sample mean is N(mu, Sigma / n) and,
        independently, the scatter about it is Wishart(n - 1, Sigma) = (L B)(L B)' with L
        the model's Cholesky factor and B from ``bartlett`` (lower triangular, so L B is
        the scatter's Cholesky factor)."""
        k_chi, k_normal = jax.random.split(key)
        d = self.cfg.dim
        z = jax.random.normal(k_normal, (d + d * (d - 1) // 2,))
        chi2_D = gamma.chi_square(k_chi, n - 1 - jnp.arange(d))
        mean_D = params.mean_D + params.chol_DxD @ z[:d] / n**0.5
        return mean_D - self.mean_D, params.chol_DxD @ bartlett(chi2_D, z[d:])

    def sample_statistics(self, key: Array, params: GaussianParams, n: int,
                          dyn: Dyn) -> tuple[Array, Array, Array]:
        """The ``statistics`` of n samples of the model, without drawing them
        (``_own_sample``)."""
        del dyn
        offset_D, lb_DxD = self._own_sample(key, params, n)
        return jnp.float32(n), n * offset_D, lb_DxD @ lb_DxD.T + n * jnp.outer(offset_D,
                                                                              offset_D)

    def refit(self, key: Array, params: GaussianParams, n: int, dyn: Dyn) -> GaussianParams:
        """The fit on n samples of the model (mix=replace), drawn as in ``_own_sample``:
        the new factor is L B / sqrt(n - ddof), exact however close to singular the chain
        has collapsed."""
        del dyn
        offset_D, lb_DxD = self._own_sample(key, params, n)
        return GaussianParams(self.mean_D + offset_D, lb_DxD / jnp.sqrt(n - self.ddof))

    def generate(self, key: Array, params: GaussianParams, n: int, dyn: Dyn) -> Array:
        del dyn
        return params.mean_D + jax.random.normal(key, (n, self.cfg.dim)) @ params.chol_DxD.T

    def truth_log_likelihood(self, x_NxD: Array) -> Array:
        """log N(x | mu, Sigma) of every sample under the truth (the curation's verifier)."""
        return gaussian_log_density(x_NxD, self.mean_D, self.chol_DxD)

    def log_likelihood(self, params: GaussianParams, x_NxD: Array) -> Array:
        """log N(x | mu_hat, Sigma_hat) of every sample under a fitted model."""
        return gaussian_log_density(x_NxD, params.mean_D, params.chol_DxD)

    def measure(self, key: Array, params: GaussianParams,
                teacher: Params = None, dyn: Dyn | None = None) -> dict[str, Array]:
        del teacher
        diag_D = jnp.abs(jnp.diagonal(params.chol_DxD))
        metrics = {
            "w2_to_truth": w2_gaussians(params.mean_D, params.chol_DxD, self.mean_D,
                                        self.sqrt_DxD),
            "mean_error": jnp.sum((params.mean_D - self.mean_D) ** 2),
            "cov_trace_ratio": jnp.sum(params.chol_DxD**2) / self.trace,
            "cov_logdet_ratio": 2 * jnp.log(diag_D).sum() - self.logdet,
        }
        if self.cfg.fidelity_points:
            fake_MxD = self.generate(key, params, self.cfg.fidelity_points, dyn)
            metrics.update(precision_recall_density_coverage(
                self.x_test_TxD, fake_MxD, self.cfg.fidelity_k)._asdict())
        return metrics
