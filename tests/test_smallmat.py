"""sim.smallmat: Cholesky factors and nuclear norms of many small matrices, elementwise
across the batch, against float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim import smallmat

EPS = np.finfo(np.float32).eps


def _matrices(shape, seed=0, graded=False):
    m = np.random.default_rng(seed).standard_normal(shape)
    if graded:  # columns scaled over 6 decades: an ill-conditioned, collapsing model
        m = m * np.logspace(-6, 0, shape[-1])
    return m.astype(np.float32)


def _nuclear(m):
    return np.linalg.svd(m.astype(np.float64), compute_uv=False).sum(-1)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (10, 10), (7, 5), (5, 7), (40, 40)])
def test_nuclear_norm_is_the_sum_of_singular_values(shape):
    """Square, tall and wide, odd widths (a zero column added), one pair (no moves
    between rounds), more than 32 rows (a reduction) and a sweep rolled into a loop."""
    m = _matrices((50, *shape))
    np.testing.assert_allclose(jax.jit(jax.vmap(smallmat.nuclear_norm))(m), _nuclear(m),
                               rtol=4 * max(shape) * EPS)


def test_nuclear_norm_of_ill_conditioned_and_rank_deficient_matrices():
    graded = _matrices((50, 10, 10), graded=True)
    np.testing.assert_allclose(jax.vmap(smallmat.nuclear_norm)(graded), _nuclear(graded),
                               rtol=40 * EPS)
    low_rank = _matrices((50, 10, 3)) @ _matrices((50, 3, 10), seed=1)  # rank 3
    low_rank[:, :, 4] = 0.0  # and a zero column
    np.testing.assert_allclose(jax.vmap(smallmat.nuclear_norm)(low_rank),
                               _nuclear(low_rank), rtol=40 * EPS)
    assert float(smallmat.nuclear_norm(jnp.zeros((4, 4)))) == 0.0


def test_batches_by_hand_by_vmap_and_over_several_blocks_agree():
    """Leading axes, nested vmaps, and more matrices than one block (padded, in a loop
    over blocks) give every matrix its own result."""
    m = _matrices((smallmat.BLOCK * 2 + 37, 6, 6), seed=2)
    expected = _nuclear(m)
    np.testing.assert_allclose(smallmat.nuclear_norm(m), expected, rtol=24 * EPS)
    np.testing.assert_allclose(smallmat.nuclear_norm(m[0]), expected[0], rtol=24 * EPS)
    nested = jax.jit(jax.vmap(jax.vmap(smallmat.nuclear_norm)))(m[:2085].reshape(5, 417, 6, 6))
    np.testing.assert_allclose(nested.reshape(-1), expected[:2085], rtol=24 * EPS)
    # a matrix's result does not depend on what else is in its block
    alone = jax.vmap(smallmat.nuclear_norm)(m[:3])
    np.testing.assert_array_equal(alone, jax.vmap(smallmat.nuclear_norm)(m[:3]))


def _spd(shape, seed=0):
    a = _matrices(shape, seed).astype(np.float64)
    return (a @ np.swapaxes(a, -1, -2) / shape[-1] + np.eye(shape[-1])).astype(np.float32)


@pytest.mark.parametrize("n", [1, 5, 10, 33])
def test_cholesky_factors_match_float64(n):
    s = _spd((smallmat.BLOCK + 5, n, n), seed=n)
    expected = np.linalg.cholesky(s.astype(np.float64))
    for got in (smallmat.cholesky(s), jax.jit(jax.vmap(smallmat.cholesky))(s),
                jax.vmap(jax.vmap(smallmat.cholesky))(s[:1025].reshape(5, 205, n, n)
                                                      ).reshape(-1, n, n)):
        np.testing.assert_allclose(got, expected[:len(got)], atol=8 * n * EPS)


def test_cholesky_reads_the_lower_triangle_and_fails_whole():
    s = _spd((3, 4, 4))
    garbage = s + np.triu(np.full((4, 4), 7.0, np.float32), 1)  # upper triangle ignored
    np.testing.assert_array_equal(smallmat.cholesky(garbage), smallmat.cholesky(s))
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]], np.float32)
    both = smallmat.cholesky(np.stack([indefinite, np.eye(2, dtype=np.float32)]))
    assert np.isnan(both[0]).all()  # no half-usable factor
    np.testing.assert_array_equal(both[1], np.eye(2))
