"""Quality and diversity of generated points against real ones, by k nearest neighbours.

Each real point x_i gets a ball of radius r_i, the distance to its k-th nearest other real
point; each generated point y_j a ball of radius s_j among the generated points.

- precision (Kynkaanniemi et al. 2019): share of generated points inside some real ball;
- recall (Kynkaanniemi et al. 2019): share of real points inside some generated ball;
- density (Naeem et al. 2020): mean number of real balls a generated point is in, over k
  (about 1 when both sets come from one distribution; unlike precision it counts how
  often a generated point looks real, so outliers among the real points matter less);
- coverage (Naeem et al. 2020): share of real balls that hold a generated point.

A model that sharpens (samples only near the modes) keeps precision and loses recall and
coverage: the quality-diversity trade-off of Alemohammad et al. (2024).
Distances are Euclidean; cost O((N + M)^2 d) in memory and time.

Measured for the worlds whose models produce points (gaussian, gmm). Not for digits: its
model is a classifier that labels given images, so its "samples" are real images with the
model's labels. Their pixels are real images drawn whatever the model is, so PRDC on them
would be the same for every generation. On the penultimate features there is no common
space: each generation's network starts from a fresh initialisation, so its features are
its own coordinates, and embedding with one fixed network would measure that network's
features of the same real images, not anything the chain produces. What a digits chain
changes is p(y | x), which its label metrics measure (``accuracy``, ``nll_real``,
``agreement``, the class-prior and group metrics).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


def pairwise_distances(a_NxD: Array, b_MxD: Array) -> Array:
    """Euclidean distances N x M (clipped at 0 against rounding)."""
    sq_NxM = (jnp.sum(a_NxD**2, 1)[:, None] + jnp.sum(b_MxD**2, 1)[None, :]
              - 2 * a_NxD @ b_MxD.T)
    return jnp.sqrt(jnp.maximum(sq_NxM, 0.0))


def knn_radii(x_NxD: Array, k: int) -> Array:
    """Distance from each point to its k-th nearest other point of the same set (N,)."""
    d_NxN = pairwise_distances(x_NxD, x_NxD)
    d_NxN = jnp.where(jnp.eye(x_NxD.shape[0], dtype=bool), jnp.inf, d_NxN)  # not itself
    return -jax.lax.top_k(-d_NxN, k)[0][:, k - 1]


class Fidelity(NamedTuple):
    precision: Array
    recall: Array
    density: Array
    coverage: Array


def precision_recall_density_coverage(real_NxD: Array, fake_MxD: Array,
                                      k: int = 5) -> Fidelity:
    """The four k-NN measures of ``fake`` against ``real`` (see the module docstring)."""
    real_radii_N = knn_radii(real_NxD, k)
    fake_radii_M = knn_radii(fake_MxD, k)
    d_NxM = pairwise_distances(real_NxD, fake_MxD)
    in_real_ball_NxM = d_NxM <= real_radii_N[:, None]
    in_fake_ball_NxM = d_NxM <= fake_radii_M[None, :]
    return Fidelity(
        precision=jnp.mean(jnp.any(in_real_ball_NxM, axis=0)),
        recall=jnp.mean(jnp.any(in_fake_ball_NxM, axis=1)),
        density=jnp.sum(in_real_ball_NxM) / (k * fake_MxD.shape[0]),
        coverage=jnp.mean(jnp.any(in_real_ball_NxM, axis=1)))
