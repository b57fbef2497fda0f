"""Linear regression refitted on its own labels (Gerstgrasser et al. 2024; Dohmatob et al. 2024).

A fixed design X (T x d) with y = X w + sigma * eps. Generation 0 fits OLS (or ridge) on real
labels; generation g fits on labels produced by generation g-1 plus fresh noise. Under
`replace` the weight error is a random walk: E||w_g - w||^2 = (g+1) sigma^2 tr (X'X)^-1. Under
`accumulate` it stays bounded: E||w_g - w||^2 = sigma^2 tr (X'X)^-1 sum_{j=1}^{g+1} 1/j^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sim import lapack
from sim.errors import require
from sim.worlds.base import Array, Dyn, MetricInfo, Params, WorldConfig


@dataclass(frozen=True)
class LinregConfig(WorldConfig):
    dim: int = 10  # d, the number of features
    noise: float = 1.0  # sigma, the label noise added to every generation's labels
    ridge: float = 0.0  # alpha in ||y - X w||^2 + alpha ||w||^2 (0 = OLS)
    n_test: int = 1000  # held-out inputs x ~ N(0, I) for test_mse
    truth_seed: int = 0  # draws the design, the held-out inputs and the true weights


class LinregWorld:
    """The model is the fitted weight vector.

    Data is {"row": index into the design, "y": label}: every lane shares one design, so
    pools of any size hold only indices and labels, and a fit reduces them to per-row
    weight totals before touching X.
    """

    metric_info = {
        "test_mse": MetricInfo(
            "test mean squared error against noiseless targets", "",
            "mean over held-out x ~ N(0, I) of (x . w_hat - x . w)^2"),
        "weight_error": MetricInfo("squared error of the fitted weights", "", "||w_hat - w||^2"),
    }
    cpu_lane_batch = 0  # vmap measured 1.4x-2.5x faster than lax.map batches
    retention_of = None
    headline = ("test_mse", "weight_error")

    def __init__(self, cfg: LinregConfig):
        require(cfg.dim >= 1, "world.dim", cfg.dim, "an integer >= 1")
        require(cfg.noise >= 0, "world.noise", cfg.noise, "a float >= 0")
        require(cfg.ridge >= 0, "world.ridge", cfg.ridge, "a float >= 0")
        require(cfg.n_test >= 1, "world.n_test", cfg.n_test, "an integer >= 1")
        require(cfg.ridge > 0 or cfg.n_samples >= cfg.dim, "world.n_samples", cfg.n_samples,
                f"at least world.dim={cfg.dim} design rows for OLS (or set world.ridge > 0)")
        self.cfg = cfg
        self.n_samples = cfg.n_samples
        self.min_rows = 1 if cfg.ridge > 0 else cfg.dim
        rng = np.random.default_rng(cfg.truth_seed)
        self.x_TxD = jnp.asarray(rng.standard_normal((cfg.n_samples, cfg.dim)), jnp.float32)
        self.w_D = jnp.asarray(rng.standard_normal(cfg.dim), jnp.float32)
        self.x_test_MxD = jnp.asarray(rng.standard_normal((cfg.n_test, cfg.dim)), jnp.float32)

    def _labelled(self, key: Array, w_D: Array, n: int) -> dict[str, Array]:
        assert n == self.n_samples, "a fixed design produces exactly n_samples rows"
        y_T = self.x_TxD @ w_D + self.cfg.noise * jax.random.normal(key, (n,))
        return {"row": jnp.arange(n, dtype=jnp.int32), "y": y_T}

    def sample_real(self, key: Array, n: int) -> dict[str, Array]:
        return self._labelled(key, self.w_D, n)

    def fit(self, key: Array, data: dict[str, Array], weights_N: Array, dyn: Dyn,
            teacher: Params = None) -> Array:
        del key, dyn, teacher
        return self.fit_statistics(self.statistics(data, weights_N))

    def statistics(self, data: dict[str, Array], weights_N: Array) -> tuple[Array, Array]:
        """Sufficient statistics, additive over rows: per design row, the total weight and
        the weighted label sum."""
        t = self.n_samples
        return (jax.ops.segment_sum(weights_N, data["row"], t),
                jax.ops.segment_sum(weights_N * data["y"], data["row"], t))

    def fit_statistics(self, statistics: tuple[Array, Array]) -> Array:
        """The fitted weights from the summed ``statistics`` of the data."""
        count_T, label_sum_T = statistics
        gram_DxD = (count_T[:, None] * self.x_TxD).T @ self.x_TxD
        gram_DxD = gram_DxD + self.cfg.ridge * jnp.eye(self.cfg.dim)
        return lapack.solve(gram_DxD, label_sum_T @ self.x_TxD)

    def generate(self, key: Array, params: Array, n: int, dyn: Dyn) -> dict[str, Array]:
        del dyn
        return self._labelled(key, params, n)

    def _label_log_likelihood(self, w_D: Array, data: dict[str, Array]) -> Array:
        """log N(y | x_row . w, sigma^2) of every row (-inf off the line when sigma = 0)."""
        sigma = self.cfg.noise
        residual_N = data["y"] - self.x_TxD[data["row"]] @ w_D
        if sigma == 0:
            return jnp.where(residual_N == 0, 0.0, -jnp.inf)
        return -0.5 * (residual_N / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)

    def truth_log_likelihood(self, data: dict[str, Array]) -> Array:
        """log N(y | x . w, sigma^2) of every row under the true weights (the verifier)."""
        return self._label_log_likelihood(self.w_D, data)

    def log_likelihood(self, params: Array, data: dict[str, Array]) -> Array:
        """log N(y | x . w_hat, sigma^2) of every row under fitted weights."""
        return self._label_log_likelihood(params, data)

    def measure(self, key: Array, params: Array,
                teacher: Params = None, dyn: Dyn | None = None) -> dict[str, Array]:
        del key, teacher, dyn
        error_D = params - self.w_D
        return {
            "test_mse": jnp.mean((self.x_test_MxD @ error_D) ** 2),
            "weight_error": jnp.sum(error_D**2),
        }
