"""Normal draws with ``jax.random``'s values that compile fast on the CPU.

XLA's CPU backend compiles the threefry hash slowly for a shape whose last axis is short
and not a multiple of 16: ``jax.random.bits`` of shape (100, 10) took 1.4 s to compile, of
shape (10,) vmapped over 5000 lanes 1.2 s, against 0.26 s for (16,) or (1000,) (jaxlib
0.10.2; docs/performance.md). With partitionable threefry (JAX's default), element i of a
draw depends only on the key and i, so a flat draw padded to a multiple of 16, cut and
reshaped, holds the same numbers as the draw of the shape itself (``tests/test_draws.py``);
under ``jax_threefry_partitionable=False`` the numbers differ, with the same distribution.
"""

from __future__ import annotations

import math

import jax

Array = jax.Array

_MULTIPLE = 16


def _padded(size: int) -> int:
    return -(-size // _MULTIPLE) * _MULTIPLE


def normal(key: Array, shape: tuple[int, ...]) -> Array:
    """``jax.random.normal(key, shape)``."""
    size = math.prod(shape)
    return jax.random.normal(key, (_padded(size),))[:size].reshape(shape)
