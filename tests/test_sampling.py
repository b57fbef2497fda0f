"""Decoding transforms: exact small cases, greedy, top-p/min-p rules, sampling frequencies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import sampling

P4 = np.array([0.5, 0.3, 0.15, 0.05])
LOGITS4 = jnp.log(jnp.asarray(P4, jnp.float32)) + 1.7  # shift: softmax invariant


def probs(**kw: object) -> np.ndarray:
    return np.asarray(sampling.probabilities(LOGITS4, **kw))


def test_identity_when_off() -> None:
    np.testing.assert_allclose(probs(), P4, atol=1e-6)
    out = sampling.transform_logits(LOGITS4, 1.0, 0, 1.0, 0.0)
    np.testing.assert_allclose(out, np.log(P4), atol=1e-6)
    # the defaults are off, also where the filters run traced (no static shortcut)
    np.testing.assert_allclose(sampling.transform_logits(LOGITS4), np.log(P4), atol=1e-6)
    assert bool(jnp.all(sampling.keep_mask(LOGITS4, top_p=jnp.asarray(1.0))))
    assert bool(jnp.all(sampling.keep_mask(LOGITS4, min_p=jnp.asarray(0.0))))


@pytest.mark.parametrize("top_k", [-1, 2.0, jnp.asarray(2)])
def test_top_k_must_be_a_static_int_of_at_least_zero(top_k) -> None:
    with pytest.raises(ValueError, match="top_k must be a static int >= 0"):
        sampling.keep_mask(LOGITS4, top_k=top_k)


def test_temperature() -> None:
    expected = P4**0.5 / np.sum(P4**0.5)
    np.testing.assert_allclose(probs(temperature=2.0), expected, atol=1e-6)
    expected = P4**4 / np.sum(P4**4)
    np.testing.assert_allclose(probs(temperature=0.25), expected, atol=1e-6)


def test_top_k() -> None:
    np.testing.assert_allclose(probs(top_k=3), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0],
                               atol=1e-6)
    np.testing.assert_allclose(probs(top_k=1), [1, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(probs(top_k=4), P4, atol=1e-6)  # k >= V is off
    np.testing.assert_allclose(probs(top_k=9), P4, atol=1e-6)


def test_top_p_smallest_set_with_enough_mass() -> None:
    np.testing.assert_allclose(probs(top_p=0.7), [0.625, 0.375, 0, 0], atol=1e-6)
    np.testing.assert_allclose(probs(top_p=0.5 - 1e-3), [1, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(probs(top_p=0.9), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0],
                               atol=1e-6)
    np.testing.assert_allclose(probs(top_p=0.96), P4, atol=1e-6)
    np.testing.assert_allclose(probs(top_p=0.0), [1, 0, 0, 0], atol=1e-7)


def test_top_p_one_is_exactly_off_even_for_tiny_tail() -> None:
    logits = jnp.array([30.0, 0.0, -5.0, -80.0])  # tail mass rounds to 0 in float32
    keep = sampling.keep_mask(logits, 1.0, 0, 1.0, 0.0)
    assert bool(jnp.all(keep))
    # traced (a lane's setting): the mass before the last token rounds to 1 >= top_p
    keep = sampling.keep_mask(logits, 1.0, 0, jnp.asarray(1.0), 0.0)
    assert bool(jnp.all(keep))


def test_top_p_after_top_k_renormalisation() -> None:
    # After top_k=2 the distribution is [0.625, 0.375]; top_p=0.6 keeps only the first.
    np.testing.assert_allclose(probs(top_k=2, top_p=0.6), [1, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(probs(top_k=2, top_p=0.7), [0.625, 0.375, 0, 0], atol=1e-6)


def test_min_p_relative_to_max() -> None:
    np.testing.assert_allclose(probs(min_p=0.5), [0.625, 0.375, 0, 0], atol=1e-6)
    np.testing.assert_allclose(probs(min_p=0.29), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0],
                               atol=1e-6)
    np.testing.assert_allclose(probs(min_p=0.61), [1, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(probs(min_p=0.0), P4, atol=1e-6)


def test_greedy_no_nan_and_ties() -> None:
    logits = jnp.array([[0.1, 2.0, -1.0, 2.0], [-jnp.inf, 0.0, 3.0, 1.0]])
    out = sampling.transform_logits(logits, 0.0, 0, 1.0, 0.0)
    assert not bool(jnp.any(jnp.isnan(out)))
    # A tiny positive temperature is (numerically) greedy too, without overflow.
    tiny = sampling.probabilities(jnp.array([0.0, 0.0, 4.0, 1e30]), 1e-38)
    np.testing.assert_array_equal(tiny, [0, 0, 0, 1])
    p = np.asarray(jax.nn.softmax(out, -1))
    np.testing.assert_array_equal(p, [[0, 1, 0, 0], [0, 0, 1, 0]])  # ties: lowest index
    tokens = sampling.sample(jax.random.key(0), logits, 0.0)
    np.testing.assert_array_equal(tokens, [1, 2])


def test_traced_settings_one_compile_and_per_row() -> None:
    # a wrapper of its own: jit wrappers of one function share its compile cache
    fn = jax.jit(lambda *args: sampling.probabilities(*args), static_argnums=2)
    for t, p, m in [(0.0, 1.0, 0.0), (2.0, 0.7, 0.0), (1.0, 1.0, 0.5)]:
        np.testing.assert_allclose(fn(LOGITS4, t, 0, p, m), probs(temperature=t, top_p=p,
                                                                  min_p=m), atol=1e-6)
    assert fn._cache_size() == 1
    # Per-row settings broadcast against the leading shape.
    rows = jnp.stack([LOGITS4, LOGITS4])
    out = sampling.probabilities(rows, jnp.array([1.0, 0.0]), 0, jnp.array([0.7, 1.0]))
    np.testing.assert_allclose(out, [[0.625, 0.375, 0, 0], [1, 0, 0, 0]], atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(logits=st.lists(st.floats(-20, 20, width=32, allow_subnormal=False), min_size=8,
                      max_size=8),  # XLA on CPU flushes subnormals to zero; numpy does not
       temperature=st.floats(0.0, 3.0), top_k=st.sampled_from([0, 3]),
       top_p=st.floats(0.0, 1.0), min_p=st.floats(0.0, 1.0))
def test_always_a_distribution_keeping_argmax(logits: list[float], temperature: float,
                                              top_k: int, top_p: float, min_p: float) -> None:
    x = jnp.asarray(logits, jnp.float32)
    p = np.asarray(_jit_probs(x, temperature, top_k, top_p, min_p))
    assert np.all(np.isfinite(p))
    assert abs(p.sum() - 1.0) < 1e-5
    assert p[int(np.argmax(np.asarray(x)))] > 0


_jit_probs = jax.jit(sampling.probabilities, static_argnums=2)


@pytest.mark.parametrize("kw", [dict(temperature=1.3, top_k=3),
                                dict(temperature=0.8, top_p=0.9, min_p=0.1),
                                dict(min_p=0.3)])  # keeps 3 of 6; defaults elsewhere
def test_sampling_frequencies_match(kw: dict) -> None:
    logits = jnp.array([1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
    n = 40_000
    draws = sampling.sample(jax.random.key(1), jnp.broadcast_to(logits, (n, 6)), **kw)
    freq = np.bincount(np.asarray(draws), minlength=6) / n
    p = np.asarray(sampling.probabilities(logits, **kw))
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 4 * se + 1e-12), (freq, p)
    assert np.all(freq[p == 0] == 0)


def test_contrast_weighs_a_log_probability_difference_per_row() -> None:
    plus = jnp.log(jnp.array([[0.5, 0.5], [0.5, 0.5]])) + 3.0  # shifted: log-softmax undoes
    minus = jnp.log(jnp.array([[0.25, 0.75], [0.75, 0.25]]))
    want = np.array([[2.0], [0.5]]) * np.log([[2.0, 2 / 3], [2 / 3, 2.0]])
    np.testing.assert_allclose(sampling.contrast(plus, minus, jnp.array([2.0, 0.5])), want,
                               rtol=1e-6)
    np.testing.assert_allclose(sampling.contrast(plus, minus, 2.0), 2 * np.log(
        [[2.0, 2 / 3], [2 / 3, 2.0]]), rtol=1e-6)


def test_sample_at_inverts_the_cdf_in_any_leading_shape() -> None:
    """u = 0 skips a leading token of probability 0; u past the first token's mass takes
    the last; rows of a 2 x 3 batch each use their own u; defaults switch every filter off
    (top_k = 1 or min_p = 1 would keep token 1 only)."""
    x = jnp.broadcast_to(jnp.log(jnp.array([0.0, 0.6, 0.0, 0.4])), (2, 3, 4))
    u = jnp.array([[0.0, 0.25, 0.59], [0.61, 0.75, 0.9999]])
    want = [[1, 1, 1], [3, 3, 3]]
    np.testing.assert_array_equal(sampling.sample_at(u, x), want)
    np.testing.assert_array_equal(sampling.sample_at(u, x, 1.0, 0, 1.0, 0.0), want)
    assert sampling.sample(jax.random.key(0), x).shape == (2, 3)


_jit_sample = jax.jit(sampling.sample, static_argnums=3)


@settings(max_examples=40, deadline=None)
@given(logits=st.lists(st.one_of(st.floats(-30, 30, width=32, allow_subnormal=False),
                                 st.just(-np.inf)), min_size=8,
                       max_size=8).filter(lambda x: max(x) > -np.inf),
       temperature=st.floats(0.0, 3.0), top_k=st.sampled_from([0, 3]),
       top_p=st.floats(0.01, 1.0), seed=st.integers(0, 2**16))
def test_draws_only_tokens_of_positive_probability(logits: list[float], temperature: float,
                                                   top_k: int, top_p: float,
                                                   seed: int) -> None:
    """The inverse-CDF draw never lands on an excluded (-inf, filtered) token, and greedy
    is the argmax."""
    x = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (256, 8))
    p = np.asarray(_jit_probs(x[0], temperature, top_k, top_p, 0.0))
    draws = np.asarray(_jit_sample(jax.random.key(seed), x, temperature, top_k, top_p, 0.0))
    assert np.all(p[draws] > 0)
    if temperature == 0.0:
        assert np.all(draws == np.argmax(logits))
