"""Neural building blocks for the neural worlds: a causal transformer LM and an MLP.

Both models are flax.linen modules whose parameters are plain pytrees, so that many
independent models ("lanes") train in parallel under ``jax.vmap``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Array = jax.Array
Params = Any
LeafInit = Callable[[tuple[str, ...], tuple[int, ...]], tuple[float, float]]


def draw_params(key: Array, shapes: Params, leaf_init: LeafInit) -> Params:
    """Fill a pytree of ``ShapeDtypeStruct`` with ``mean + std * N(0, 1)`` per leaf, where
    ``(mean, std) = leaf_init(path_names, shape)``, from ONE normal draw over all leaves.

    One draw instead of one per parameter keeps XLA compile time small (each separate
    threefry draw costs ~0.1-0.2 s of CPU compile time).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [int(leaf.size) for _, leaf in flat]
    noise = jax.random.normal(key, (sum(sizes),), jnp.float32)
    leaves, start = [], 0
    for (path, leaf), size in zip(flat, sizes):
        names = tuple(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
        mean, std = leaf_init(names, tuple(leaf.shape))
        value = noise[start:start + size].reshape(leaf.shape) * std + mean
        leaves.append(value.astype(leaf.dtype))
        start += size
    return jax.tree_util.tree_unflatten(treedef, leaves)
