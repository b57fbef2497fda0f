"""The Vendi score (Friedman & Dieng 2023): the effective number of distinct items.

VS_q(x_1..x_N) = exp(H_q(lambda)), with lambda the eigenvalues of K / N for a positive
semi-definite similarity K with K_ii = 1, and H_q the Renyi entropy of order q (q = 1:
Shannon). Here K is the cosine similarity of feature vectors, so VS is in [1, N]: 1 when all
items are parallel, N when they are orthogonal. For token sequences the features are exact
bag-of-n-gram counts (``bag_of_ngrams``; n = 1: bag of tokens).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sim.eigenvalues import eigvalsh
from sim.metrics.sequences import ngram_ids

Array = jax.Array


def vendi_score(features_NxF: Array, q: float = 1.0) -> Array:
    """Vendi score of order q >= 0 (``jnp.inf`` allowed) of N items under the cosine
    similarity of their features. Eigenvalues below float32 resolution (N eps max) count
    as 0, so that q = 0 gives the rank of K."""
    norms_N = jnp.linalg.norm(features_NxF, axis=-1, keepdims=True)
    unit_NxF = features_NxF / jnp.where(norms_N > 0, norms_N, 1.0)
    n = features_NxF.shape[0]
    # eigenvalues of K / N = X X' / N equal those of X' X / N (plus zeros): use the smaller
    gram = unit_NxF @ unit_NxF.T if n <= unit_NxF.shape[1] else unit_NxF.T @ unit_NxF
    lam = jnp.clip(eigvalsh(gram / n), 0.0)
    lam = jnp.where(lam > max(gram.shape[0], n) * jnp.finfo(jnp.float32).eps * lam.max(),
                    lam, 0.0)
    lam = lam / lam.sum()
    if q == 1.0:
        return jnp.exp(-jnp.sum(jnp.where(lam > 0, lam * jnp.log(jnp.where(lam > 0, lam, 1.0)),
                                          0.0)))
    if q == jnp.inf:
        return 1.0 / lam.max()
    return jnp.exp(jnp.log(jnp.sum(jnp.where(lam > 0, lam**q, 0.0))) / (1.0 - q))


def bag_of_ngrams(tokens_NxL: Array, n: int = 1) -> Array:
    """Per-sequence n-gram count vectors, exact (no hashing): N x M, M = N (L - n + 1) the
    sample's n-gram total; column j counts the n-gram with id j of ``ngram_ids`` (the
    sample's distinct n-grams in lexicographic order; the remaining columns are 0)."""
    ids_NxW = ngram_ids(tokens_NxL, n)
    rows_NxW = jnp.broadcast_to(jnp.arange(ids_NxW.shape[0])[:, None], ids_NxW.shape)
    return jnp.zeros((ids_NxW.shape[0], ids_NxW.size)).at[rows_NxW, ids_NxW].add(1.0)
