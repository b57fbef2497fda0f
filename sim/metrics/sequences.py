"""Diversity of a sample of token sequences (N sequences of L tokens, ints in [0, V)), and
the rate of a planted trait in it (a trigger n-gram followed by a continuation).

n-grams are taken within each sequence (none crosses a sequence boundary) and counted
exactly by a lexicographic sort of their n token columns, so any vocabulary size and n
work without hashing or V^n-sized tables.
"""

from __future__ import annotations

import gzip

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def ngrams(tokens_NxL: Array, n: int) -> Array:
    """All within-sequence n-grams as rows: (N * (L - n + 1)) x n."""
    length = tokens_NxL.shape[1]
    windows = [tokens_NxL[:, i:length - n + 1 + i] for i in range(n)]
    return jnp.stack(windows, -1).reshape(-1, n)


def _sorted_runs(rows_MxN: Array) -> tuple[Array, Array, Array]:
    """Sort rows lexicographically; return (sorted rows, mask of rows that start a run,
    the sorting permutation: sorted row i is row ``order_M[i]``)."""
    columns = tuple(rows_MxN[:, i] for i in range(rows_MxN.shape[1]))
    *sorted_cols, order_M = jax.lax.sort(
        (*columns, jnp.arange(rows_MxN.shape[0], dtype=jnp.int32)), num_keys=len(columns))
    sorted_MxN = jnp.stack(sorted_cols, -1)
    differs_M = jnp.any(sorted_MxN[1:] != sorted_MxN[:-1], axis=-1)
    return sorted_MxN, jnp.concatenate([jnp.ones(1, bool), differs_M]), order_M


def ngram_ids(tokens_NxL: Array, n: int) -> Array:
    """Exact dense ids of the within-sequence n-grams, N x (L - n + 1): equal n-grams share
    an id, distinct ones differ; ids are ranks in lexicographic order, in [0, M) with M the
    number of n-grams of the sample."""
    _, starts_M, order_M = _sorted_runs(ngrams(tokens_NxL, n))
    ids_M = jnp.zeros_like(order_M).at[order_M].set(jnp.cumsum(starts_M, dtype=jnp.int32) - 1)
    return ids_M.reshape(tokens_NxL.shape[0], -1)


def ngram_counts(tokens_NxL: Array, n: int) -> Array:
    """Counts of the distinct n-grams, padded with zeros to length M (the n-gram total)."""
    _, starts_M, _ = _sorted_runs(ngrams(tokens_NxL, n))
    run_M = jnp.cumsum(starts_M) - 1
    return jax.ops.segment_sum(jnp.ones_like(run_M), run_M, num_segments=starts_M.shape[0])


def entropy_of_counts(counts_M: Array) -> Array:
    """Entropy (nats) of the distribution of counts (zeros allowed)."""
    p_M = counts_M.astype(jnp.float32) / counts_M.sum()
    return -jnp.sum(jnp.where(p_M > 0, p_M * jnp.log(jnp.where(p_M > 0, p_M, 1.0)), 0.0))


def distinct_of_counts(counts_M: Array) -> Array:
    """Distinct n-grams over all n-grams, from ``ngram_counts``' zero-padded counts."""
    return jnp.sum(counts_M > 0) / counts_M.shape[0]


def ngram_entropy(tokens_NxL: Array, n: int = 1) -> Array:
    """Entropy (nats) of the empirical n-gram distribution; n = 1 is the unigram entropy."""
    return entropy_of_counts(ngram_counts(tokens_NxL, n))


def distinct_n(tokens_NxL: Array, n: int) -> Array:
    """Distinct n-grams over all n-grams (Li et al. 2016), in (0, 1]."""
    return distinct_of_counts(ngram_counts(tokens_NxL, n))


def support_coverage(tokens_NxL: Array, support_V: Array) -> Array:
    """Fraction of the true support (a boolean mask over V tokens) that appears."""
    seen_V = jnp.zeros(support_V.shape[0], bool).at[tokens_NxL.reshape(-1)].set(True)
    return jnp.sum(seen_V & support_V) / jnp.maximum(jnp.sum(support_V), 1)


def _ngram_match_counts(a_LxN: Array, b_LxN: Array) -> Array:
    """For each n-gram of a, how often it occurs in b: vector of length L."""
    equal_LxL = jnp.all(a_LxN[:, None, :] == b_LxN[None, :, :], axis=-1)
    return equal_LxL.sum(1)


def self_bleu(tokens_NxL: Array, max_n: int = 4, epsilon: float = 0.1) -> Array:
    """Self-BLEU (Zhu et al. 2018): mean BLEU-max_n of each sequence against all others.

    NLTK's ``sentence_bleu`` with smoothing method 1 (as in Texygen), each sequence the
    hypothesis and the others its references: modified (clipped) n-gram precisions with
    uniform weights; equal lengths make the brevity penalty 1; a precision with no matches
    gets ``epsilon`` matches, over max(1, n-grams) (so an order longer than the sequences
    counts ``epsilon``); a sequence sharing no token with any other scores 0. Cost
    O(N^2 L^2 max_n): use a subsample of sequences. Higher means less diverse; 1 when all
    sequences are identical (and at least max_n long).
    """
    n_seq, length = tokens_NxL.shape
    others_NxN = ~jnp.eye(n_seq, dtype=bool)
    log_precisions, shares_a_token_N = [], None
    for n in range(1, max_n + 1):
        if n > length:  # no n-grams: NLTK's 0 / max(1, 0), smoothed
            log_precisions.append(jnp.full(n_seq, jnp.log(epsilon)))
            continue
        grams_NxLxn = jax.vmap(lambda t: ngrams(t[None], n))(tokens_NxL)
        pairwise = jax.vmap(lambda a: jax.vmap(lambda b: _ngram_match_counts(a, b))(
            grams_NxLxn))(grams_NxLxn)  # [h, r, t]: count in r of h's n-gram at t
        own_NxL = jnp.diagonal(pairwise, axis1=0, axis2=1).T  # count in h itself
        best_ref_NxL = jnp.max(jnp.where(others_NxN[:, :, None], pairwise, 0), axis=1)
        # sum over positions of min(c_h, c_ref) / c_h = sum over n-grams of min(c_h, c_ref)
        clipped_N = jnp.sum(jnp.minimum(own_NxL, best_ref_NxL) / own_NxL, axis=1)
        if n == 1:
            shares_a_token_N = clipped_N > 0
        clipped_N = jnp.where(clipped_N > 0, clipped_N, epsilon)
        log_precisions.append(jnp.log(clipped_N / grams_NxLxn.shape[1]))
    bleu_N = jnp.exp(jnp.mean(jnp.stack(log_precisions), axis=0))
    return jnp.mean(jnp.where(shares_a_token_N, bleu_N, 0.0))


def compression_ratio(tokens_NxL: np.ndarray) -> np.float32:
    """Raw bytes over gzip-compressed bytes of the token stream (one byte a token when
    V <= 256); higher means more repetitive. Runs on the host, on numpy arrays: worlds list
    it in ``host_metrics``, so compiled chains hold no callback (which would keep them out
    of JAX's persistent compilation cache)."""
    data = np.asarray(tokens_NxL)
    width = 1 if data.max(initial=0) < 256 else 4
    raw = data.astype(np.uint8 if width == 1 else np.uint32).tobytes()
    return np.float32(len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0)))


def trait_counts(tokens_NxL: Array, trigger_K: Array, continuation_M: Array
                 ) -> tuple[Array, Array]:
    """(occurrences, followed): the trigger's occurrences that leave room for the
    continuation in their sequence (start s with s + K + M <= L, overlapping ones counted
    at every s), and how many of them the continuation follows. int32 scalars."""
    k = trigger_K.shape[0]
    windows_WxKM = ngrams(tokens_NxL, k + continuation_M.shape[0])
    occurs_W = jnp.all(windows_WxKM[:, :k] == trigger_K, axis=-1)
    followed_W = occurs_W & jnp.all(windows_WxKM[:, k:] == continuation_M, axis=-1)
    return occurs_W.sum(dtype=jnp.int32), followed_W.sum(dtype=jnp.int32)


def trait_rate(tokens_NxL: Array, trigger_K: Array, continuation_M: Array) -> Array:
    """Share of the trigger's occurrences (``trait_counts``) that the continuation
    follows, in [0, 1]; NaN when the trigger does not occur."""
    occurrences, followed = trait_counts(tokens_NxL, trigger_K, continuation_M)
    return jnp.where(occurrences > 0, followed / jnp.maximum(occurrences, 1), jnp.nan)
