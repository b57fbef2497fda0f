"""Decoding transforms: temperature, top-k, top-p (nucleus) and min-p, and sampling.

Everything is pure and traceable. ``temperature``, ``top_p`` and ``min_p`` may be traced
scalars (or arrays broadcastable to the logits' leading shape ``...``) so that a sweep over
them runs inside one compiled program: nothing branches in Python on their values.
``top_k`` is a static Python int (it fixes shapes); 0 means off.

Conventions (the order is that of Hugging Face's and vLLM's samplers):

1. temperature: logits / temperature. ``temperature <= 0`` means greedy: only the argmax
   (the lowest index among ties) is kept. No division by zero happens.
2. top-k: keep the k most likely tokens (ties broken by lower index), exactly k of them.
3. top-p: on the distribution renormalised after top-k, keep the smallest most-likely-first
   prefix whose mass is >= top_p. ``top_p >= 1`` is off exactly (no rounding can drop a
   token); ``top_p <= 0`` keeps only the most likely token.
4. min-p: keep tokens with p >= min_p * p_max (the ratio does not depend on the
   renormalisation above). ``min_p <= 0`` is off.

``contrast`` is the shift by the difference of two models' log-probabilities that
antidistillation sampling adds after the temperature (``sim.antidistillation``).

The most likely token is always kept, so the result is always a proper distribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = Array | float


def _per_row(x: ArrayLike) -> Array:
    """A scalar or per-row setting, shaped to broadcast against ``[..., V]``."""
    return jnp.asarray(x, jnp.float32)[..., None]


def _scaled(logits_xV: Array, temperature: ArrayLike) -> Array:
    """(logits - max) / temperature: the max is 0, so no overflow to +inf however small
    the temperature (1 where greedy: the values are unused then but must stay finite)."""
    temperature_x1 = _per_row(temperature)
    shifted_xV = logits_xV - jnp.max(logits_xV, axis=-1, keepdims=True)
    return shifted_xV / jnp.where(temperature_x1 <= 0.0, 1.0, temperature_x1)


def _statically_off(top_k: int, top_p: ArrayLike, min_p: ArrayLike) -> bool:
    """Whether top-k, top-p and min-p are all off as static Python values."""
    static = isinstance(top_p, (int, float)) and isinstance(min_p, (int, float))
    return static and top_k == 0 and top_p >= 1.0 and min_p <= 0.0


def contrast(logits_plus_xV: Array, logits_minus_xV: Array, weight: ArrayLike) -> Array:
    """``weight * (log_softmax(plus) - log_softmax(minus))``, ``[..., V]`` float32: the
    weighted difference of two next-token log-probabilities (``weight`` a scalar or per
    row)."""
    difference_xV = (jax.nn.log_softmax(jnp.asarray(logits_plus_xV, jnp.float32), axis=-1)
                     - jax.nn.log_softmax(jnp.asarray(logits_minus_xV, jnp.float32), axis=-1))
    return _per_row(weight) * difference_xV


def keep_mask(logits_xV: Array, temperature: ArrayLike = 1.0, top_k: int = 0,
              top_p: ArrayLike = 1.0, min_p: ArrayLike = 0.0) -> Array:
    """Boolean ``[..., V]``: which tokens survive the decoding transforms."""
    logits_xV = jnp.asarray(logits_xV, jnp.float32)
    vocab = logits_xV.shape[-1]
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be a static int >= 0 (0 = off), got {top_k!r}")
    greedy_x1 = _per_row(temperature) <= 0.0
    scaled_xV = _scaled(logits_xV, temperature)
    if _statically_off(top_k, top_p, min_p):  # no ranking needed: skip the sorts
        is_argmax_xV = jnp.arange(vocab) == jnp.argmax(scaled_xV, axis=-1, keepdims=True)
        return ~greedy_x1 | is_argmax_xV

    # Rank tokens most likely first; a stable sort breaks ties by lower index.
    order_xV = jnp.argsort(-scaled_xV, axis=-1, stable=True)
    sorted_xV = jnp.take_along_axis(scaled_xV, order_xV, axis=-1)
    rank_V = jnp.arange(vocab)
    keep_sorted_xV = jnp.ones(sorted_xV.shape, bool)
    if 0 < top_k < vocab:
        keep_sorted_xV = rank_V < top_k
        sorted_xV = jnp.where(keep_sorted_xV, sorted_xV, -jnp.inf)

    probs_sorted_xV = jax.nn.softmax(sorted_xV, axis=-1)
    mass_before_xV = jnp.cumsum(probs_sorted_xV, axis=-1) - probs_sorted_xV
    top_p_x1 = _per_row(top_p)
    keep_sorted_xV = keep_sorted_xV & ((mass_before_xV < top_p_x1) | (top_p_x1 >= 1.0))
    # min-p, relative to the most likely token (rank 0); written as a log-ratio so that
    # tokens whose probability underflows are still compared correctly.
    min_p_x1 = _per_row(min_p)
    log_ratio_xV = sorted_xV - sorted_xV[..., :1]
    keep_sorted_xV = keep_sorted_xV & ((min_p_x1 <= 0.0)
                                       | (log_ratio_xV >= jnp.log(jnp.maximum(min_p_x1, 1e-38))))
    keep_sorted_xV = keep_sorted_xV & (~greedy_x1 | (rank_V == 0))
    keep_sorted_xV = keep_sorted_xV | (rank_V == 0)

    inverse_xV = jnp.argsort(order_xV, axis=-1)
    return jnp.take_along_axis(keep_sorted_xV, inverse_xV, axis=-1)


def transform_logits(logits_xV: Array, temperature: ArrayLike = 1.0, top_k: int = 0,
                     top_p: ArrayLike = 1.0, min_p: ArrayLike = 0.0) -> Array:
    """Log-probabilities of the distribution one samples from: ``log_softmax(logits /
    temperature)`` renormalised over the kept tokens, ``-inf`` elsewhere (greedy: 0 at the
    argmax). Shape ``[..., V]``, float32; never NaN while each row has a finite logit, for
    any temperature >= 0 (no overflow as temperature -> 0+)."""
    logits_xV = jnp.asarray(logits_xV, jnp.float32)
    keep_xV = keep_mask(logits_xV, temperature, top_k, top_p, min_p)
    masked_xV = jnp.where(keep_xV, _scaled(logits_xV, temperature), -jnp.inf)
    return jax.nn.log_softmax(masked_xV, axis=-1)


def probabilities(logits_xV: Array, temperature: ArrayLike = 1.0, top_k: int = 0,
                  top_p: ArrayLike = 1.0, min_p: ArrayLike = 0.0) -> Array:
    """The sampling distribution ``[..., V]`` after the transforms (zeros where excluded)."""
    return jnp.exp(transform_logits(logits_xV, temperature, top_k, top_p, min_p))


def sample(key: Array, logits_xV: Array, temperature: ArrayLike = 1.0, top_k: int = 0,
           top_p: ArrayLike = 1.0, min_p: ArrayLike = 0.0) -> Array:
    """Draw one token per row: int32 of shape ``logits_xV.shape[:-1]``, by
    ``sample_at(uniform(key), ...)``."""
    u_x = jax.random.uniform(key, logits_xV.shape[:-1])
    return sample_at(u_x, logits_xV, temperature, top_k, top_p, min_p)


def sample_at(u_x: Array, logits_xV: Array, temperature: ArrayLike = 1.0, top_k: int = 0,
              top_p: ArrayLike = 1.0, min_p: ArrayLike = 0.0) -> Array:
    """The token of each row at its uniform ``u_x`` in [0, 1): int32 of shape
    ``logits_xV.shape[:-1]``.

    By inverting the CDF: the first token whose cumulative probability exceeds u * total.
    A token of probability 0 never comes first (its cumulative value equals its
    predecessor's), and the first token to reach the total catches u * total even where
    rounding makes it the largest value. This compiles about 3x faster on CPU than
    ``jax.random.categorical``, which draws V Gumbels per row (0.85 s vs 2.9 s for 8 x 541 x
    10 logits). The price is float32 resolution: u has 2^-24 steps, and a token whose
    probability is below half a float32 step of the cumulative sum before it (about 3e-8
    near 1) is never drawn: at most V x 3e-8 of the mass per draw is truncated (1e-6 for V =
    32, 8e-6 for the 256 bytes of the text world)."""
    probs_xV = probabilities(logits_xV, temperature, top_k, top_p, min_p)
    cdf_xV = jnp.cumsum(probs_xV, axis=-1)
    total_x1 = cdf_xV[..., -1:]
    cdf_xV = jnp.where(cdf_xV >= total_x1, jnp.inf, cdf_xV)
    return jnp.argmax(cdf_xV > u_x[..., None] * total_x1, axis=-1).astype(jnp.int32)
