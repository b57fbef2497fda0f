"""Quantities of probability vectors over V outcomes (trailing axis V), in nats."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _xlogy(x: Array, y: Array) -> Array:
    return jnp.where(x > 0, x * jnp.log(jnp.where(x > 0, y, 1.0)), 0.0)


def entropy(p_xV: Array) -> Array:
    """Shannon entropy -sum p log p, in [0, log V]."""
    return -jnp.sum(_xlogy(p_xV, p_xV), axis=-1)


def tail_mass(p_xV: Array, order_V: Array, k: int) -> Array:
    """Mass on the outcomes beyond rank k of a reference order (order_V[0] most frequent)."""
    return jnp.sum(p_xV[..., order_V[k:]], axis=-1)


def empirical(tokens: Array, vocab: int) -> Array:
    """Relative frequencies of integer outcomes in [0, vocab)."""
    counts_V = jnp.zeros(vocab).at[tokens.reshape(-1)].add(1.0)
    return counts_V / counts_V.sum()
