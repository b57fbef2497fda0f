"""The green-list watermark of Kirchenbauer et al. (2023) and its detector.

Green list. Before the teacher draws token x_t, the previous token x_{t-1} (BOS = V at
t = 0) seeds a green list G(x_{t-1}) of the V tokens, and ``delta`` is added to the green
tokens' logits (before temperature and the sampling filters, as a logits processor is):

    logits'_t[v] = logits_t[v] + delta * [v in G(x_{t-1})].

A table ``green_PxV`` holds every list: row p for previous token p = 0..V (P = V + 1, the
last row for BOS). Entry (p, v) is green with probability ``gamma``, independently, from
``fold_in(key(defense.key), p)``: one fixed key per previous token, so every generation of
every lane and the detector agree. (Kirchenbauer et al. partition the vocabulary into a
green list of exactly gamma V tokens. With the small vocabularies simulated here that
makes the green counts of the distinct pairs that share a previous token hypergeometric
rather than binomial, and the z-test below conservative: independent entries make its
null distribution exactly binomial for any text that does not depend on the key. Measured
on 2000 keys x samples of 64 x 32 tokens of the default markov_lm chain, V = 32, about 330
distinct pairs each: false-positive rate at p < 0.05 of 0.050 (sd of z 1.01) with
independent entries, 0.022 (sd 0.78) with exactly gamma V green tokens per list.)

Detector (one-proportion z-test, Kirchenbauer et al. eq. 3). Every distinct (previous
token, token) pair in the text is scored once (repeated pairs would otherwise count as
independent evidence, Fernandez et al. 2023; Sander et al. 2024): with T distinct pairs of
which |s|_G are green,

    z = (|s|_G - gamma T) / sqrt(T gamma (1 - gamma)),    p = P(Z > z), Z ~ N(0, 1).

Under the null (text independent of the key) each distinct pair is green with probability
gamma independently, so |s|_G ~ Binomial(T, gamma). The pairs of a whole sample (all its
sequences) are pooled: one test per sample. T = 0 gives NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("gamma", "vocab"))
def green_lists(key: int, gamma: float, vocab: int) -> Array:
    """``green_PxV`` (bool, P = V + 1): row p is the green list after previous token p
    (p = V: BOS); each entry green with probability ``gamma``, row p from
    ``fold_in(key(key), p)``."""
    root = jax.random.key(key)
    return jax.vmap(lambda p: jax.random.bernoulli(jax.random.fold_in(root, p), gamma,
                                                   (vocab,)))(jnp.arange(vocab + 1))


def previous_tokens(tokens_xL: Array, bos: int) -> Array:
    """The token before each position, ``[..., L]``: BOS at position 0."""
    bos_x1 = jnp.full(tokens_xL.shape[:-1] + (1,), bos, tokens_xL.dtype)
    return jnp.concatenate([bos_x1, tokens_xL[..., :-1]], axis=-1)


def bias(green_PxV: Array, delta: Array | float) -> Array:
    """The additive logit bias ``delta * green`` per previous token, float32 ``P x V``."""
    return jnp.asarray(delta, jnp.float32) * green_PxV.astype(jnp.float32)


def biased_logits(logits_xLxV: Array, tokens_xL: Array, green_PxV: Array,
                  delta: Array | float) -> Array:
    """Teacher-forced watermarked logits: position t of ``tokens`` read x_{t-1} (BOS at
    t = 0), so its logits get ``delta`` on G(x_{t-1})."""
    previous_xL = previous_tokens(tokens_xL, bos=green_PxV.shape[0] - 1)
    return logits_xLxV + bias(green_PxV, delta)[previous_xL]


def green_count(tokens_NxL: Array, green_PxV: Array) -> tuple[Array, Array]:
    """(|s|_G, T): green and all distinct (previous token, token) pairs of a sample
    (int32 scalars); BOS is the previous token at every sequence's position 0."""
    vocab = green_PxV.shape[1]
    pair_NxL = previous_tokens(tokens_NxL, bos=vocab) * vocab + tokens_NxL
    seen_PV = jnp.zeros(green_PxV.size, bool).at[pair_NxL.ravel()].set(True)
    return (jnp.sum(seen_PV & green_PxV.ravel()).astype(jnp.int32),
            jnp.sum(seen_PV).astype(jnp.int32))


def z_score(green: Array, total: Array, gamma: float) -> Array:
    """One-proportion z of ``green`` successes in ``total`` trials against ``gamma``."""
    green, total = jnp.asarray(green, jnp.float32), jnp.asarray(total, jnp.float32)
    return (green - gamma * total) / jnp.sqrt(total * gamma * (1.0 - gamma))


def p_value(z: Array) -> Array:
    """The normal upper tail P(Z > z)."""
    return jax.scipy.stats.norm.sf(z)


@functools.partial(jax.jit, static_argnames="gamma")
def detect(tokens_NxL: Array, green_PxV: Array, gamma: float) -> tuple[Array, Array]:
    """(z, p) of the detector on a sample of sequences (see the module docstring)."""
    z = z_score(*green_count(tokens_NxL, green_PxV), gamma)
    return z, p_value(z)
