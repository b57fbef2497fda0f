"""Matrix factorisations and solves that call LAPACK one matrix at a time on the CPU.

jaxlib 0.10 runs a batched LAPACK call on the CPU (``potrf``, ``trsm``, ``syevd``, ...) by
splitting the batch over XLA's intra-op thread pool and blocking the pool thread it runs
on until the pieces are done. Two such calls that XLA runs at once can take every thread
of the pool and then wait for ever for pieces that no thread is left to run: on 2 cores,
two independent Cholesky factorisations of 10,000 10 x 10 matrices in one program hung in
every run, and so did two triangular solves and two ``jnp.linalg.solve`` (LU and
triangular solves); a watermarked LM chain hung in its two eigenvalue calls
(docs/performance.md). jaxlib 0.11 drops that code path; 0.10.2 is what this project
installs.

The functions here give ``jnp.linalg``'s results, but on the CPU each LAPACK call gets one
matrix: a batch, by hand or under ``vmap``, becomes a loop over its matrices
(``jax.custom_batching.sequential_vmap``), so no call has pieces to wait for. Other
backends get the batched call. Cost on 2 cores: a QR of 10,000 100 x 10 matrices took
114 ms either way. Cholesky factors and the nuclear norm, which the Gaussian and GMM worlds
need at every lane and generation, come from ``sim.smallmat`` instead, elementwise across
the batch (the loop's per-call overhead was most of their cost). On the CPU the functions
here cannot be differentiated (JAX does not linearise ``sequential_vmap``); the worlds that
use them fit in closed form or by EM, without gradients.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import jax.scipy.linalg

Array = jax.Array


def one_matrix_at_a_time(fn: Callable[..., Any], *core_ranks: int) -> Callable[..., Any]:
    """``fn`` of unbatched operands (operand i with ``core_ranks[i]`` dimensions), applied
    over the operands' broadcast leading (batch) dimensions; on the CPU one matrix at a
    time, on other backends as one batched call."""
    looped = jax.custom_batching.sequential_vmap(lambda *operands: fn(*operands))

    @functools.wraps(fn)
    def call(*operands: Array) -> Any:
        operands = [jnp.asarray(x) for x in operands]
        if jax.default_backend() != "cpu":
            return fn(*operands)
        cores = [x.shape[x.ndim - rank:] for x, rank in zip(operands, core_ranks)]
        batch = jnp.broadcast_shapes(*(x.shape[:x.ndim - rank]
                                       for x, rank in zip(operands, core_ranks)))
        if not batch:
            return looped(*operands)
        flat = [jnp.broadcast_to(x, batch + core).reshape((-1,) + core)
                for x, core in zip(operands, cores)]
        out = jax.vmap(looped)(*flat)
        return jax.tree.map(lambda y: y.reshape(batch + y.shape[1:]), out)

    return call


qr = one_matrix_at_a_time(jnp.linalg.qr, 2)
"""The reduced QR decompositions (q, r) of matrices (..., m, n)."""


def solve(a_xNxN: Array, b: Array) -> Array:
    """x with a x = b, as ``jnp.linalg.solve`` (NumPy 2's rule): ``b`` (n,) is one vector,
    ``b`` (..., n, k) columns, batch dimensions broadcast with ``a``'s."""
    return one_matrix_at_a_time(jnp.linalg.solve, 2, min(jnp.ndim(b), 2))(a_xNxN, b)


def solve_triangular(a_xNxN: Array, b: Array, lower: bool = False) -> Array:
    """x with a x = b for triangular ``a`` (..., n, n); ``b`` as for ``solve``."""
    return one_matrix_at_a_time(
        functools.partial(jax.scipy.linalg.solve_triangular, lower=lower), 2,
        min(jnp.ndim(b), 2))(a_xNxN, b)
