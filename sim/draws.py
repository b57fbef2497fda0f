"""Random draws that compile fast and run vectorised on the CPU.

XLA's CPU backend compiles the threefry hash slowly for a shape whose last axis is short
and not a multiple of 16: ``jax.random.bits`` of shape (100, 10) took 1.4 s to compile, of
shape (10,) vmapped over 5000 lanes 1.2 s, against 0.26 s for (16,) or (1000,) (jaxlib
0.10.2; docs/performance.md). With partitionable threefry (JAX's default), element i of a
draw depends only on the key and i, so a flat draw padded to a multiple of 16, cut and
reshaped, holds the same numbers as the draw of the shape itself (``split`` and ``normal``,
``tests/test_draws.py``); under ``jax_threefry_partitionable=False`` the
numbers differ, with the same distribution. With the hash lowered as straight-line code
(``sim.threefry``, jaxlib 0.10) the short axes compile as fast as padded ones; the padding
stays for the JAX loop's lowering, where that is not registered.
"""

from __future__ import annotations

import math

import jax

Array = jax.Array

_MULTIPLE = 16


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
