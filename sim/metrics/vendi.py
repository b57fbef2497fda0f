"""The Vendi score (Friedman & Dieng 2023): the effective number of distinct items.

VS_q(x_1..x_N) = exp(H_q(lambda)), with lambda the eigenvalues of K / N for a positive
semi-definite similarity K with K_ii = 1, and H_q the Renyi entropy of order q (q = 1:
Shannon). Here K is the cosine similarity of feature vectors, so VS is in [1, N]: 1 when all
items are parallel, N when they are orthogonal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def vendi_score(features_NxF: Array, q: float = 1.0) -> Array:
    """Vendi score of order q of N items under the cosine similarity of their features."""
    norms_N = jnp.linalg.norm(features_NxF, axis=-1, keepdims=True)
    unit_NxF = features_NxF / jnp.where(norms_N > 0, norms_N, 1.0)
    n = features_NxF.shape[0]
    # eigenvalues of K / N = X X' / N equal those of X' X / N (plus zeros): use the smaller
    gram = unit_NxF @ unit_NxF.T if n <= unit_NxF.shape[1] else unit_NxF.T @ unit_NxF
    lam = jnp.clip(jnp.linalg.eigvalsh(gram / n), 0.0)
    lam = lam / lam.sum()
    if q == 1.0:
        return jnp.exp(-jnp.sum(jnp.where(lam > 0, lam * jnp.log(jnp.where(lam > 0, lam, 1.0)),
                                          0.0)))
    if q == jnp.inf:
        return 1.0 / lam.max()
    return jnp.exp(jnp.log(jnp.sum(jnp.where(lam > 0, lam**q, 0.0))) / (1.0 - q))


def bag_of_ngrams(tokens_NxL: Array, vocab: int, n: int = 1) -> Array:
    """Per-sequence n-gram count vectors (hashed into vocab * 4 buckets when n > 1)."""
    if n == 1:
        return jax.vmap(lambda t: jnp.zeros(vocab).at[t].add(1.0))(tokens_NxL)
    buckets = vocab * 4
    length = tokens_NxL.shape[1]
    ids = sum(tokens_NxL[:, i:length - n + 1 + i].astype(jnp.uint32) * jnp.uint32(
        (1_000_003 ** i) % 2**32) for i in range(n))
    return jax.vmap(lambda t: jnp.zeros(buckets).at[(t % buckets).astype(jnp.int32)].add(1.0))(
        ids)
