"""Metric functions: hand-computed cases and property-based bounds and invariances."""

import functools
import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sim.metrics.distributions import empirical, entropy, tail_mass
from sim.objectives import kl as kl_logits
from sim.metrics.sequences import (compression_ratio, distinct_n, ngram_entropy, ngram_ids,
                                   self_bleu, support_coverage, trait_counts, trait_rate)
from sim.metrics.vendi import bag_of_ngrams, vendi_score

V = 6
# one shape, so that each jitted metric compiles once across examples
token_samples = arrays(np.int32, (5, 8), elements=st.integers(0, V - 1))
jit_entropy = jax.jit(ngram_entropy, static_argnums=1)
jit_distinct = jax.jit(distinct_n, static_argnums=1)
jit_self_bleu = jax.jit(self_bleu)
probabilities = arrays(np.float64, st.integers(2, 8), elements=st.floats(0.0, 1.0)).filter(
    lambda p: p.sum() > 1e-3).map(lambda p: p / p.sum())
SETTINGS = settings(max_examples=25, deadline=None)


def test_hand_computed_ngram_statistics():
    tokens = jnp.array([[0, 0, 1, 1]])
    np.testing.assert_allclose(ngram_entropy(tokens, 1), np.log(2), rtol=1e-6)
    np.testing.assert_allclose(ngram_entropy(tokens, 2), np.log(3), rtol=1e-6)
    np.testing.assert_allclose(ngram_entropy(tokens), np.log(2), rtol=1e-6)  # unigrams
    assert float(distinct_n(jnp.array([[0, 0, 0, 0]]), 1)) == 0.25
    assert float(distinct_n(jnp.array([[0, 0, 0, 0]]), 2)) == pytest.approx(1 / 3)
    # n-grams never cross sequences: [0 1] [1 0] has bigrams (0,1), (1,0) only
    assert float(distinct_n(jnp.array([[0, 1], [1, 0]]), 2)) == 1.0
    np.testing.assert_allclose(ngram_entropy(jnp.array([[0, 1], [1, 0]]), 2), np.log(2))


@SETTINGS
@given(token_samples)
def test_ngram_measures_are_bounded_and_order_free(tokens):
    perm = np.random.default_rng(0).permutation(tokens.shape[0])
    for n in (1, 2, 3):
        h = float(jit_entropy(tokens, n))
        assert -1e-6 <= h <= min(n * np.log(V), np.log(tokens.size)) + 1e-5
        d = float(jit_distinct(tokens, n))
        assert 0 < d <= 1
        np.testing.assert_allclose(jit_entropy(tokens[perm], n), h, rtol=1e-5, atol=1e-6)
        assert float(jit_distinct(tokens[perm], n)) == d


def test_self_bleu_hand_cases():
    # jitted: eager, its small ops compile one by one (10 s instead of 2)
    same = jnp.array([[1, 2, 3, 4, 5]] * 3)
    np.testing.assert_allclose(jit_self_bleu(same), 1.0, rtol=1e-6)
    # no shared token: 0, as NLTK's sentence_bleu returns (smoothing never applies)
    disjoint = jnp.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    assert float(jit_self_bleu(disjoint)) == 0.0
    # one shared token: precisions 1/5, then 0.1 smoothed matches over 4, 3, 2 n-grams
    one = jnp.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 0]])
    expected = np.exp(np.mean(np.log(np.array([1 / 5, 0.1 / 4, 0.1 / 3, 0.1 / 2]))))
    np.testing.assert_allclose(jit_self_bleu(one), expected, rtol=1e-5)
    # sequences shorter than max_n: an order with no n-grams counts 0.1 / max(1, 0)
    for length in (1, 2, 3):
        short = jnp.array([[1, 2, 3][:length]] * 2)
        expected = np.exp(np.mean(np.log([1.0] * length + [0.1] * (4 - length))))
        np.testing.assert_allclose(jit_self_bleu(short), expected, rtol=1e-5)
    # clipping: hypothesis [7 7 7 7] against [7 x x x]: unigram precision 1/4
    clipped = jnp.array([[7, 7, 7, 7], [7, 1, 2, 3]])
    p1 = np.array([1 / 4, 0.1 / 3, 0.1 / 2, 0.1 / 1])  # first sequence as hypothesis
    p2 = np.array([1 / 4, 0.1 / 3, 0.1 / 2, 0.1 / 1])  # second: only its 7 matches
    expected = (np.exp(np.mean(np.log(p1))) + np.exp(np.mean(np.log(p2)))) / 2
    np.testing.assert_allclose(jit_self_bleu(clipped), expected, rtol=1e-5)


@SETTINGS
@given(token_samples)
def test_self_bleu_is_a_bounded_order_free_mean(tokens):
    value = float(jit_self_bleu(tokens))
    assert 0 <= value <= 1 + 1e-6
    np.testing.assert_allclose(jit_self_bleu(tokens[::-1]), value, rtol=1e-5)


@SETTINGS
@given(probabilities, probabilities)
def test_entropy_and_kl_bounds(p, q):
    p32 = jnp.asarray(p, jnp.float32)
    assert -1e-6 <= float(entropy(p32)) <= np.log(p.size) + 1e-5
    assert float(kl(p32, p32)) == pytest.approx(0.0, abs=1e-6)  # KL from sim.objectives
    if q.size == p.size:
        assert float(kl(p32, jnp.asarray(q, jnp.float32))) >= -1e-6


def kl(p, q):
    """KL(p || q) of probability vectors, via sim.objectives.kl on log-probabilities."""
    return kl_logits(jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(q)))


def test_distribution_helpers_by_hand():
    p = jnp.array([0.1, 0.2, 0.3, 0.4])
    order = jnp.array([3, 2, 1, 0])  # reference: outcome 3 most frequent
    np.testing.assert_allclose(tail_mass(p, order, 2), 0.3, rtol=1e-6)
    batch = jnp.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5]])
    np.testing.assert_allclose(tail_mass(batch, jnp.array([2, 0, 1]), 1), [1, 1, 0.5])
    np.testing.assert_allclose(entropy(batch), [np.log(2), 0, 1.5 * np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(empirical(jnp.array([[0, 1], [1, 1]]), 3), [0.25, 0.75, 0])
    assert float(kl(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]))) == np.inf
    support = jnp.array([True, True, True, False])
    assert float(support_coverage(jnp.array([[0, 0, 3]]), support)) == pytest.approx(1 / 3)
    assert float(support_coverage(jnp.array([[2]]), jnp.arange(4) == 2)) == 1.0


def test_vendi_extremes_and_orders():
    assert float(vendi_score(jnp.ones((5, 3)))) == pytest.approx(1.0, rel=1e-5)
    assert float(vendi_score(jnp.eye(4))) == pytest.approx(4.0, rel=1e-5)
    x = jax.random.normal(jax.random.key(0), (12, 5))
    vs1, vs2, vsinf = (float(vendi_score(x, q)) for q in (1.0, 2.0, jnp.inf))
    assert vsinf <= vs2 <= vs1  # Renyi entropy falls with its order


@SETTINGS
@given(arrays(np.float64, (6, 4), elements=st.floats(-3, 3)))
def test_vendi_is_bounded_and_order_free(x):
    x = x + 1e-3  # no all-zero rows
    vendi = jax.jit(vendi_score)
    value = float(vendi(jnp.asarray(x, jnp.float32)))
    assert 1 - 1e-3 <= value <= x.shape[0] + 1e-3
    np.testing.assert_allclose(vendi(jnp.asarray(x[::-1], jnp.float32)), value, rtol=1e-3)


@pytest.mark.parametrize("shape", [(5, 8), (9, 4)])  # K from X X' and from X' X
def test_vendi_matches_a_numpy_reference(shape):
    """Rows of any length (one of them 0) are normalised before the cosine kernel; orders
    0 (rank), 1/2, 1, 2 and inf of the eigenvalues of K / N, in float64 numpy."""
    rng = np.random.default_rng(shape[0])
    x = rng.standard_normal(shape) * rng.uniform(0.1, 10, (shape[0], 1))
    x[1] = 0.0
    unit = x / np.where(np.linalg.norm(x, axis=1, keepdims=True) > 0,
                        np.linalg.norm(x, axis=1, keepdims=True), 1)
    lam = np.clip(np.linalg.eigvalsh(unit @ unit.T / shape[0]), 0, None)
    lam = lam[lam > 1e-5] / lam[lam > 1e-5].sum()
    want = {0.0: len(lam), 0.5: np.sum(lam**0.5) ** 2, 1.0: np.exp(-np.sum(lam * np.log(lam))),
            2.0: 1 / np.sum(lam**2), np.inf: 1 / lam.max()}
    for q, value in want.items():
        np.testing.assert_allclose(vendi_score(jnp.asarray(x, jnp.float32), q), value,
                                   rtol=1e-4, err_msg=f"q = {q}")


def test_bag_of_ngrams_counts_exactly():
    # columns: the sample's distinct n-grams in lexicographic order, then zeros
    np.testing.assert_allclose(bag_of_ngrams(jnp.array([[0, 2, 2]])), [[1, 2, 0]])
    np.testing.assert_array_equal(ngram_ids(jnp.array([[0, 2, 2], [2, 0, 2]]), 2),
                                  [[0, 2], [1, 0]])  # (0 2) (2 0) (2 2)
    tokens = jnp.array([[0, 1, 0, 1], [1, 0, 1, 0]])  # bigrams (0 1) x2 (1 0) / x1 x2
    np.testing.assert_allclose(bag_of_ngrams(tokens, 2), [[2, 1, 0, 0, 0, 0],
                                                         [1, 2, 0, 0, 0, 0]])
    # 1000-token vocabulary, 3-grams: no hashing, so no collisions
    big = jnp.array([[997, 998, 999, 3], [997, 998, 999, 4]])
    np.testing.assert_allclose(bag_of_ngrams(big, 3), [[1, 1, 0, 0], [1, 0, 1, 0]])


def test_vendi_of_bag_of_bigrams_by_hand():
    tokens = jnp.array([[0, 1, 0, 1], [1, 0, 1, 0]])
    # unigram bags are equal ([2, 2]): one effective sequence
    assert float(vendi_score(bag_of_ngrams(tokens, 1))) == pytest.approx(1.0, rel=1e-5)
    # bigram bags [2, 1] and [1, 2]: cosine 4/5, eigenvalues of K / 2: 0.9, 0.1
    lam = np.array([0.9, 0.1])
    features = bag_of_ngrams(tokens, 2)
    np.testing.assert_allclose(vendi_score(features), np.exp(-np.sum(lam * np.log(lam))),
                               rtol=1e-5)
    np.testing.assert_allclose(vendi_score(features, 2.0), 1 / np.sum(lam**2), rtol=1e-5)
    np.testing.assert_allclose(vendi_score(features, jnp.inf), 1 / 0.9, rtol=1e-5)
    np.testing.assert_allclose(vendi_score(features, 0.0), 2.0, rtol=1e-5)  # rank of K
    assert float(vendi_score(bag_of_ngrams(tokens[:1].repeat(3, 0), 2), 0.0)) == 1.0


@SETTINGS
@given(token_samples)
def test_vendi_of_ngram_bags_is_bounded_and_order_free(tokens):
    perm = np.random.default_rng(0).permutation(tokens.shape[0])
    for n, q in ((1, 1.0), (2, 2.0), (3, 0.5)):
        value = float(jit_vendi_ngrams(tokens, n, q))
        assert 1 - 1e-4 <= value <= tokens.shape[0] + 1e-4
        np.testing.assert_allclose(jit_vendi_ngrams(tokens[perm], n, q), value, rtol=1e-4)


jit_vendi_ngrams = jax.jit(lambda t, n, q: vendi_score(bag_of_ngrams(t, n), q),
                           static_argnums=(1, 2))


def test_trait_rate_by_hand():
    trigger, continuation = jnp.array([1, 2]), jnp.array([3])
    tokens = jnp.array([[1, 2, 3, 1, 2, 4],
                        [1, 2, 3, 0, 1, 2]])  # the last (1 2) has no room for (3): not counted
    occurrences, followed = trait_counts(tokens, trigger, continuation)
    assert (int(occurrences), int(followed)) == (3, 2)
    assert float(trait_rate(tokens, trigger, continuation)) == pytest.approx(2 / 3)
    # overlapping occurrences each count: (1 1) at 0 and 1, followed by (1) at 0 only
    assert float(trait_rate(jnp.array([[1, 1, 1, 5]]), jnp.array([1, 1]),
                            jnp.array([1]))) == 0.5
    assert np.isnan(trait_rate(jnp.array([[0, 0, 0]]), trigger, continuation))
    assert np.isnan(trait_rate(jnp.array([[1, 2]]), trigger, continuation))  # no room
    assert float(trait_rate(jnp.array([[1, 2, 3]]), trigger, continuation)) == 1.0  # once


@SETTINGS
@given(token_samples, arrays(np.int32, 2, elements=st.integers(0, 2)),
       arrays(np.int32, st.integers(1, 2), elements=st.integers(0, 2)))
def test_trait_rate_is_a_share_or_nan_and_order_free(tokens, trigger, continuation):
    tokens = tokens % 3  # a small alphabet, so that triggers occur
    rate = float(trait_rate(tokens, trigger, continuation))
    occurrences, followed = (int(x) for x in trait_counts(tokens, trigger, continuation))
    assert 0 <= followed <= occurrences
    assert np.isnan(rate) if occurrences == 0 else 0 <= rate <= 1
    assert float(trait_rate(tokens[::-1], trigger, continuation)) == pytest.approx(
        rate, nan_ok=True)


def test_compression_ratio_is_raw_over_gzip_bytes_of_one_byte_a_token():
    # Tokens below 256 are one byte each, larger ones four (little-endian uint32), and the
    # ratio is raw bytes over gzip -9 bytes without a timestamp. Uniformly random bytes do
    # not compress: gzip stores them, so its 18-byte frame and 5-byte stored-block header
    # make the ratio exactly 512 / 535 whatever zlib is installed.
    def gzip_bytes(raw: bytes) -> int:
        return len(gzip.compress(raw, compresslevel=9, mtime=0))

    rng = np.random.default_rng(0)
    assert compression_ratio(np.zeros((8, 64), np.int32)) == np.float32(
        512 / gzip_bytes(bytes(512)))
    assert compression_ratio(np.full((8, 64), 300, np.int32)) == np.float32(
        2048 / gzip_bytes(np.full(512, 300, "<u4").tobytes()))
    assert compression_ratio(np.full((8, 64), 256, np.int32)) == np.float32(  # not a byte
        2048 / gzip_bytes(np.full(512, 256, "<u4").tobytes()))
    assert compression_ratio(rng.integers(0, 256, (8, 64)).astype(np.int32)) == np.float32(
        512 / 535)


def test_classification_metrics_by_hand():
    from sim.metrics.classification import (accuracy, agreement, demographic_parity_gap,
                                            ece, equalized_odds_gap, group_accuracy_gap)
    probs = jnp.array([[0.95, 0.05], [0.65, 0.35], [0.25, 0.75], [0.15, 0.85]])
    labels = jnp.array([0, 1, 1, 1])
    group = jnp.array([True, True, False, False])
    assert float(accuracy(probs, labels)) == 0.75
    assert float(agreement(probs, probs[::-1])) == 0.0
    # bins of width 0.1, one example each: |1 - 0.95| + |0 - 0.65| + |1 - 0.75| + |1 - 0.85|
    np.testing.assert_allclose(ece(probs, labels, bins=10), 1.1 / 4, rtol=1e-5)
    # one bin: |mean accuracy - mean confidence| = |0.75 - 0.8|
    np.testing.assert_allclose(ece(probs, labels, bins=1), 0.05, rtol=1e-4)
    assert float(group_accuracy_gap(probs, labels, group)) == 0.5  # 1/2 vs 2/2
    assert float(demographic_parity_gap(probs, group)) == 1.0  # group predicts 0, rest 1
    # class 1: TPR in group 0/1, rest 2/2 -> gap 1
    assert float(equalized_odds_gap(probs, labels, group)) == 1.0
    perfect = jax.nn.one_hot(labels, 2)
    assert float(ece(perfect, labels)) == 0.0
    assert float(group_accuracy_gap(perfect, labels, group)) == 0.0
    assert float(equalized_odds_gap(perfect, labels, group)) == 0.0


@SETTINGS
@given(arrays(np.float64, (8, 3), elements=st.floats(0.01, 1.0)),
       arrays(np.int32, 8, elements=st.integers(0, 2)))
def test_ece_and_gaps_are_bounded(raw, labels):
    from sim.metrics.classification import demographic_parity_gap, ece, equalized_odds_gap
    probs = jnp.asarray(raw / raw.sum(1, keepdims=True), jnp.float32)
    group = jnp.arange(8) % 2 == 0
    for value in (ece(probs, labels), demographic_parity_gap(probs, group),
                  equalized_odds_gap(probs, labels, group)):
        assert -1e-6 <= float(value) <= 1 + 1e-6


def _classification_reference(probs, labels, group, bins):
    """Loop-by-loop numpy versions of the classification metrics (definitions as in the
    module docstrings), for random inputs where no by-hand value exists."""
    pred, conf = probs.argmax(1), probs.max(1)
    correct = pred == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = sum(abs(correct[m].sum() - conf[m].sum()) / len(probs)
              for lo, hi in zip(edges[:-1], edges[1:])
              for m in [(conf > lo) & (conf <= hi)] if m.any())

    def rate(hit, member):
        return hit[member].mean() if member.any() else np.nan

    def gap(hit, member):
        return abs(rate(hit, member & group) - rate(hit, member & ~group))

    classes = range(probs.shape[1])
    parity = np.nanmax([gap(pred == c, np.ones_like(group)) for c in classes])
    odds = np.nanmax([np.fmax(gap(pred == c, labels == c), gap(pred == c, labels != c))
                      for c in classes])
    return ece, gap(correct, np.ones_like(group)), parity, odds


@SETTINGS
@given(st.sampled_from([2, 3, 12]), st.sampled_from([1, 2, 7, 20]), st.integers(0, 2**31 - 1))
def test_classification_metrics_match_a_numpy_reference(classes, bins, seed):
    """Random probabilities (some nearly uniform, so confidences reach the lowest bins),
    labels and groups: ECE at several bin counts and the default 15, the accuracy gap, and
    both halves of the equalized-odds gap (either may be the larger) against loops. A few
    shapes only: each compiles its own program."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(40, classes)) * rng.choice([0.05, 3.0], (40, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.where(rng.random(40) < 0.5, probs.argmax(1), rng.integers(0, classes, 40))
    group = rng.random(40) < 0.4
    got = _classification_metrics(jnp.asarray(probs, jnp.float32), jnp.asarray(labels),
                                  jnp.asarray(group), bins)
    want = (*_classification_reference(probs.astype(np.float32), labels, group, bins),
            _classification_reference(probs.astype(np.float32), labels, group, 15)[0])
    np.testing.assert_allclose(np.array(got, np.float64), want, atol=1e-5)


@functools.partial(jax.jit, static_argnums=3)
def _classification_metrics(probs, labels, group, bins):
    """ECE at ``bins`` bins, the group accuracy, parity and odds gaps, ECE at the default
    bin count: one program per shape (eager, each small op compiles on its own)."""
    from sim.metrics.classification import (demographic_parity_gap, ece, equalized_odds_gap,
                                            group_accuracy_gap)
    return (ece(probs, labels, bins), group_accuracy_gap(probs, labels, group),
            demographic_parity_gap(probs, group), equalized_odds_gap(probs, labels, group),
            ece(probs, labels))


def test_retention_and_cost_reduction_by_hand():
    from sim.metrics.retention import retention_metrics
    metrics = {"accuracy": np.array([[0.8, 0.5], [0.4, 0.5]]),
               "nll_real": np.array([[2.0, 1.0], [2.5, 1.0]]),
               "train_flops": np.array([[10.0, 10.0], [2.5, 10.0]])}
    out = retention_metrics(metrics, "accuracy", "ratio")
    np.testing.assert_allclose(out["retention"], [[1, 1], [0.5, 1]])
    np.testing.assert_allclose(out["cost_reduction"], [[0, 0], [0.75, 0]])
    out = retention_metrics(metrics, "nll_real", "likelihood")
    np.testing.assert_allclose(out["retention"], [[1, 1], [np.exp(-0.5), 1]], rtol=1e-6)
    assert all(v.dtype == np.float32 for v in out.values())
    with pytest.raises(ValueError, match="retention kind 'percent': ratio or likelihood"):
        retention_metrics(metrics, "accuracy", "percent")
    from sim.metrics.retention import relative_to_start
    with pytest.raises(ValueError, match="relative kind 'percent': one of ratio, likelihood"):
        relative_to_start(metrics["accuracy"], "percent")


def test_relative_metrics_by_hand():
    from sim.metrics.retention import relative_metrics
    from sim.worlds.base import MetricInfo, Relative
    rates = np.array([[0.5, 0.0, np.nan], [0.75, 0.2, 0.3], [1.0, 0.0, 0.1]])
    out = relative_metrics({"trait_rate": rates},
                           {"trait_amplification": Relative("trait_rate", "ratio",
                                                            MetricInfo("x"))})
    # a ratio to a generation-0 value of 0 or NaN is NaN
    np.testing.assert_allclose(out["trait_amplification"],
                               [[1, np.nan, np.nan], [1.5, np.nan, np.nan],
                                [2, np.nan, np.nan]])
