"""Precision, recall, density and coverage (sim/metrics/fidelity.py): hand cases, the
values for two samples of one law, and the quality-diversity split of a sharpened model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.metrics.fidelity import knn_radii, precision_recall_density_coverage

prdc = jax.jit(precision_recall_density_coverage, static_argnames="k")


def test_by_hand_on_a_line():
    real = jnp.array([[0.0], [1.0], [2.0], [3.0]])  # k = 1: every real radius is 1
    fake = jnp.array([[0.5], [10.0]])  # fake radii: 9.5 each
    np.testing.assert_allclose(knn_radii(real, 1), [1, 1, 1, 1])
    got = prdc(real, fake, k=1)
    assert float(got.precision) == 0.5  # 0.5 is in a real ball, 10 is not
    assert float(got.recall) == 1.0  # every real point is within 9.5 of a fake one
    assert float(got.density) == 1.0  # 0.5 is in the balls of 0 and 1: 2 / (k * 2)
    assert float(got.coverage) == 0.5  # the balls of 0 and 1 hold a fake point


def test_balls_are_closed_and_k_defaults_to_five():
    """A point at exactly a radius is inside the ball (Naeem et al. 2020: <=). Fake equal to
    real: each real ball holds its centre and its k nearest neighbours, so density is
    (k + 1) / k; with k = 5 by default. Real points at distance 1 of a fake ball's edge
    only: recall 1 with closed balls."""
    rng = np.random.default_rng(2)
    real = jnp.asarray(rng.standard_normal((30, 3)), jnp.float32)
    assert float(precision_recall_density_coverage(real, real).density) == pytest.approx(
        6 / 5)
    line = jnp.array([[0.0], [1.0], [2.0]])  # k = 1: every fake radius is 1
    got = prdc(jnp.array([[-1.0], [3.0], [1.0]]), line, k=1)
    assert float(got.recall) == 1.0  # -1 and 3 lie on the balls of 0 and 2
    assert float(got.precision) == 1.0


def test_two_samples_of_one_law():
    """Density about 1 and coverage about 1 - 2^-k (Naeem et al. 2020, for M = N)."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(20):
        real, fake = (jnp.asarray(rng.standard_normal((400, 2)), jnp.float32) for _ in "rf")
        values.append(prdc(real, fake, k=5))
    mean = {f: np.mean([getattr(v, f) for v in values]) for f in values[0]._fields}
    assert mean["precision"] > 0.9 and mean["recall"] > 0.9
    assert mean["density"] == pytest.approx(1.0, abs=0.05)
    assert mean["coverage"] == pytest.approx(1 - 2.0**-5, abs=0.02)


def test_a_sharpened_model_keeps_quality_and_loses_diversity():
    """Samples at a fifth of the spread: all look real, few real points are reached."""
    rng = np.random.default_rng(1)
    real = jnp.asarray(rng.standard_normal((500, 2)), jnp.float32)
    sharp = jnp.asarray(rng.standard_normal((500, 2)) / 5, jnp.float32)
    got = prdc(real, sharp, k=5)
    assert float(got.precision) > 0.95 and float(got.density) > 0.9
    assert float(got.recall) < 0.5 and float(got.coverage) < 0.5
