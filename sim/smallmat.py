"""Linear algebra of many small matrices at once, elementwise across the batch.

A lane's matrices are small (the Gaussian world's 10 x 10 covariances), and there are
thousands of lanes. LAPACK takes one matrix per call on the CPU (``sim.lapack``: jaxlib
0.10's batched calls can deadlock), and the per-call overhead made those loops most of the
Gaussian workload's time on 2 cores: 10,000 Cholesky factorisations of 10 x 10 matrices
(5,000 a device) took 50 ms, of which 16 ms were ``potrf``; 10,000 eigenvalue problems
60-70 ms. Here each step of an algorithm is elementwise over the whole batch, batch axes
minor (a ``custom_vmap`` rule moves a vmapped axis last; leading axes of a plain call move
there too), in blocks of ``BLOCK`` matrices so that a block's arrays stay in cache and a
block whose matrices converge stops early. Any backend runs the same code.

* ``cholesky``: lower Cholesky factors, column by column (all NaN where a matrix is not
  positive definite; ``jnp.linalg.cholesky`` gives NaN in the lower triangle);
* ``nuclear_norm``: the sum of singular values, by Hestenes' one-sided Jacobi method:
  pairs of columns rotate until all are orthogonal, when the column norms are the singular
  values. Sweeps repeat while any pair's cosine |x'y| / (|x| |y|) exceeds sqrt(eps): the
  sum of the column norms is off the nuclear norm by second order in the cosines (the
  first-order terms cancel in the sum), so by about eps relatively. Each sweep rotates d/2
  disjoint pairs at once in each of d - 1 rounds (round-robin pairing; an odd d gets a
  zero column); a 10 x 10 matrix needs 3-6 sweeps.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

BLOCK = 1024  # matrices computed together
MAX_SWEEPS = 30  # a bound only (nuclear_norm)
UNROLLED_ROUNDS = 15  # sweeps of at most this many rounds are unrolled (15% faster)


def _batch_minor(fn: Callable[[Array], Array], core_rank: int) -> Callable[[Array], Array]:
    """``fn`` of an array (core..., B...) whose batch axes come last (core_rank core
    axes), as a function of arrays (B..., core...) that vmaps to one call of ``fn``
    over blocks of the whole batch."""

    def blocked(x: Array) -> Array:
        """``fn`` of x (B..., core...), its batch axes flattened into blocks."""
        batch, core = x.shape[:x.ndim - core_rank], x.shape[x.ndim - core_rank:]
        flat = x.reshape(-1, *core)
        b = flat.shape[0]

        def one_block(block: Array) -> Array:
            return jnp.moveaxis(fn(jnp.moveaxis(block, 0, -1)), -1, 0)

        if b <= BLOCK:
            out = one_block(flat)
        else:
            blocks = -(-b // BLOCK)
            padded = jnp.concatenate([flat, jnp.broadcast_to(flat[-1:], (blocks * BLOCK - b,
                                                                         *core))])
            out = jax.lax.map(one_block, padded.reshape(blocks, BLOCK, *core))
            out = out.reshape(blocks * BLOCK, *out.shape[2:])[:b]
        return out.reshape(*batch, *out.shape[1:])

    @jax.custom_batching.custom_vmap
    def call(x: Array) -> Array:
        return blocked(x)

    @call.def_vmap
    def _batched(axis_size: int, in_batched: list[bool], x: Array) -> tuple[Array, bool]:
        del axis_size
        return blocked(x), in_batched[0]

    return functools.wraps(fn)(call)


def _cholesky(a_NxNxB: Array) -> Array:
    """Lower Cholesky factors (N, N, B) of matrices (N, N, B), column by column: column
    j is (a[:, j] - L L[j]') / sqrt of its j-th entry, rows above j zero (the columns of L
    not yet computed are zero, so the product sums over k < j only)."""
    n = a_NxNxB.shape[0]
    rows = jnp.arange(n).reshape((n,) + (1,) * (a_NxNxB.ndim - 2))

    def column(j: Array, l_NxNxB: Array) -> Array:
        row_j = jax.lax.dynamic_index_in_dim(l_NxNxB, j, 0, keepdims=False)  # (N, B)
        v_NxB = jax.lax.dynamic_index_in_dim(a_NxNxB, j, 1, keepdims=False) - _sum(
            l_NxNxB * row_j[None], 1)
        pivot = jax.lax.dynamic_index_in_dim(v_NxB, j, 0, keepdims=False)
        col_NxB = jnp.where(rows >= j, v_NxB / jnp.sqrt(pivot), 0.0)
        return jax.lax.dynamic_update_index_in_dim(l_NxNxB, col_NxB, j, 1)

    l_NxNxB = jax.lax.fori_loop(0, n, column, jnp.zeros_like(a_NxNxB))
    return jnp.where(jnp.isfinite(l_NxNxB).all((0, 1)), l_NxNxB, jnp.nan)


cholesky = _batch_minor(_cholesky, 2)
"""Lower Cholesky factors of symmetric positive definite matrices (..., n, n), the lower
triangles read."""


def _sum(a: Array, axis: int = 0) -> Array:
    """The sum along ``axis``, as elementwise adds where it is short: XLA's CPU backend
    then fuses it with the products, where a reduction ran 2-3x slower (as a YNNPACK
    fusion)."""
    if a.shape[axis] > 32:
        return a.sum(axis)
    return functools.reduce(jnp.add, [jax.lax.index_in_dim(a, i, axis, keepdims=False)
                                      for i in range(a.shape[axis])])


def _round(top_RxHxB: Array, bottom_RxHxB: Array, largest_B: Array
           ) -> tuple[Array, Array, Array]:
    """Rotate each pair top[:, i], bottom[:, i] to orthogonal, then move the columns by
    the round-robin rotation (the first top column stays; the others move one place
    around top then bottom), so that 2H - 1 rounds meet every pair of the 2H columns once.
    ``largest_B``: the largest pair cosine met so far, per matrix (0 for pairs with a zero
    column)."""
    h = top_RxHxB.shape[1]
    x, y = top_RxHxB, bottom_RxHxB
    xx, yy, xy = _sum(x * x), _sum(y * y), _sum(x * y)
    orthogonal = xy == 0
    cosine = jnp.where(orthogonal, 0.0, jnp.abs(xy) * jax.lax.rsqrt(xx * yy))
    largest_B = jnp.maximum(largest_B, cosine.max(0))
    zeta = (yy - xx) / (2 * jnp.where(orthogonal, 1.0, xy))
    t = jnp.where(zeta >= 0, 1.0, -1.0) / (jnp.abs(zeta) + jnp.sqrt(1 + zeta * zeta))
    t = jnp.where(orthogonal, 0.0, t)
    cos = jax.lax.rsqrt(1 + t * t)
    sin = cos * t
    x, y = cos * x - sin * y, sin * x + cos * y
    if h == 1:
        return x, y, largest_B
    return (jnp.concatenate([x[:, :1], y[:, :1], x[:, 1:h - 1]], 1),
            jnp.concatenate([y[:, 1:], x[:, h - 1:]], 1), largest_B)


def _nuclear_norm(m_RxDxB: Array) -> Array:
    """The nuclear norms (B...) of matrices (R, D, B...)."""
    if m_RxDxB.shape[1] % 2:
        m_RxDxB = jnp.concatenate([m_RxDxB, jnp.zeros_like(m_RxDxB[:, :1])], 1)
    h = m_RxDxB.shape[1] // 2
    tolerance = np.sqrt(np.finfo(m_RxDxB.dtype).eps)

    def unfinished(carry: tuple[Array, Array, Array, Array]) -> Array:
        *_, largest, sweeps = carry
        return (largest > tolerance).any() & (sweeps < MAX_SWEEPS)

    def sweep(carry: tuple[Array, Array, Array, Array]) -> tuple[Array, Array, Array, Array]:
        top, bottom, largest, sweeps = carry
        rounds = 2 * h - 1
        top, bottom, largest = jax.lax.fori_loop(
            0, rounds, lambda _, c: _round(*c), (top, bottom, jnp.zeros_like(largest)),
            unroll=rounds if rounds <= UNROLLED_ROUNDS else 1)
        return top, bottom, largest, sweeps + 1

    start = (m_RxDxB[:, :h], m_RxDxB[:, h:], jnp.full(m_RxDxB.shape[2:], jnp.inf,
                                                      m_RxDxB.dtype), 0)
    top, bottom, _, _ = jax.lax.while_loop(unfinished, sweep, start)
    return sum(jnp.sqrt(_sum(c * c)).sum(0) for c in (top, bottom))


nuclear_norm = _batch_minor(_nuclear_norm, 2)
"""The sums of the singular values of real matrices (..., r, d)."""
