"""Random draws that compile fast and run vectorised on the CPU.

XLA's CPU backend compiles the threefry hash slowly for a shape whose last axis is short
and not a multiple of 16: ``jax.random.bits`` of shape (100, 10) took 1.4 s to compile, of
shape (10,) vmapped over 5000 lanes 1.2 s, against 0.26 s for (16,) or (1000,) (jaxlib
0.10.2; docs/performance.md). With partitionable threefry (JAX's default), element i of a
draw depends only on the key and i, so a flat draw padded to a multiple of 16, cut and
reshaped, holds the same numbers as the draw of the shape itself (``split``, ``normal``
and ``uniform``, ``tests/test_draws.py``); under ``jax_threefry_partitionable=False`` the
numbers differ, with the same distribution.

``gamma`` draws Gamma variates by Marsaglia and Tsang's method, like ``jax.random.gamma``,
but tries several candidates per variate at once instead of looping per variate until
each accepts: 3.2x faster over 5000 lanes of 10 variates (other numbers than
``jax.random.gamma``'s, from the same law).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array

_MULTIPLE = 16
CANDIDATES = 3  # per variate and round (gamma)


def _padded(size: int) -> int:
    return -(-size // _MULTIPLE) * _MULTIPLE


def split(key: Array, num: int = 2) -> Array:
    """``jax.random.split(key, num)``: ``split(key, 5)`` compiled in 1.4 s, the same keys
    as the first 5 of ``split(key, 16)`` in 0.64 s."""
    return jax.random.split(key, _padded(num))[..., :num]


def normal(key: Array, shape: tuple[int, ...]) -> Array:
    """``jax.random.normal(key, shape)``."""
    size = math.prod(shape)
    return jax.random.normal(key, (_padded(size),))[:size].reshape(shape)


def uniform(key: Array, shape: tuple[int, ...], minval: float = 0.0) -> Array:
    """``jax.random.uniform(key, shape, minval=minval)`` on [minval, 1)."""
    size = math.prod(shape)
    return jax.random.uniform(key, (_padded(size),), minval=minval)[:size].reshape(shape)


def gamma(key: Array, alpha: Array) -> Array:
    """Gamma(alpha, 1) variates, one per element of ``alpha`` (float32, alpha > 0).

    Marsaglia and Tsang (2000): with d = alpha - 1/3 and c = 1 / sqrt(9 d), a normal x
    gives the candidate d (1 + c x)^3, accepted if log u < x^2 / 2 + d - d v + d log v
    for a uniform u (v = (1 + c x)^3 > 0); alpha < 1 draws Gamma(alpha + 1) w^(1/alpha)
    for another uniform w. Each round draws ``CANDIDATES`` (x, u) pairs and one w per
    variate, in one ``uniform`` call (x from u as ``jax.random.normal`` does: one call
    site compiles 4x faster than five), and keeps the first accepted candidate; rounds
    repeat while some variate has none. A candidate is accepted with probability 0.95 or
    more (0.9985 for alpha near 50), so a round leaves a variate without one with
    probability 1.3e-4 or less (3e-9 near 50). Each variate is the first accepted of its
    own candidates, with the w of its round, so it is exact whatever else is drawn."""
    alpha = jnp.asarray(alpha, jnp.float32)
    small = alpha < 1
    d = jnp.where(small, alpha + 1, alpha) - 1.0 / 3.0
    c = jax.lax.rsqrt(9.0 * d)

    def round_(carry: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        i, value, done = carry
        uniforms = uniform(jax.random.fold_in(key, i), (2 * CANDIDATES + 1, *alpha.shape),
                           minval=jnp.finfo(jnp.float32).tiny)
        x = jnp.sqrt(2.0) * jax.lax.erf_inv(2 * uniforms[:CANDIDATES] - 1)
        u, w = uniforms[CANDIDATES:-1], uniforms[-1]
        v = (1.0 + c * x) ** 3
        positive = v > 0
        accepted = positive & (jnp.log(u) < 0.5 * x * x + d - d * v
                               + d * jnp.log(jnp.where(positive, v, 1.0)))
        first = jnp.argmax(accepted, axis=0)[None]
        candidate = jnp.take_along_axis(d * v, first, axis=0)[0]
        candidate = jnp.where(small, candidate * w ** (1.0 / alpha), candidate)
        return i + 1, jnp.where(done, value, candidate), done | accepted.any(0)

    start = (jnp.int32(0), jnp.zeros_like(alpha), jnp.zeros(alpha.shape, bool))
    return jax.lax.while_loop(lambda carry: ~carry[2].all(), round_, start)[1]
