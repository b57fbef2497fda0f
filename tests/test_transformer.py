"""Causal transformer LM: KV-cache decode == full forward, causality, greedy generate."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.models import transformer as tf

CFG = tf.TransformerConfig(vocab_size=13, context=12, layers=2, width=16, heads=4)


@pytest.fixture(scope="module")
def params() -> dict:
    """Random params scaled up so logits are O(1) and differences are visible."""
    p = tf.init(jax.random.key(0), CFG)
    rng = np.random.default_rng(1)
    return jax.tree_util.tree_map(
        lambda x: x + jnp.asarray(0.3 * rng.standard_normal(x.shape), jnp.float32), p)


def test_shapes_and_counts(params: dict) -> None:
    tokens = jnp.zeros((3, 7), jnp.int32)
    logits, hidden = tf.apply(params, tokens, CFG)
    assert logits.shape == (3, 7, 13) and hidden.shape == (3, 7, 16)
    d, v, c, r = CFG.width, CFG.vocab_size, CFG.context, CFG.mlp_ratio
    per_layer = (3 * d * d + 3 * d) + (d * d + d) + (r * d * d + r * d) + (r * d * d + d) + 4 * d
    assert tf.param_count(params) == v * d + c * d + CFG.layers * per_layer + 2 * d + d * v
    n_matmul = CFG.layers * (4 + 2 * r) * d * d + d * v
    assert tf.flops_per_token(CFG) == 2 * n_matmul + 4 * CFG.layers * c * d
    assert tf.train_flops_per_token(CFG) == 3 * tf.flops_per_token(CFG)
    # sampling with the cache: step p is one position's forward over a context of p + 1
    assert tf.decode_flops(CFG, 7) == sum(
        tf.flops_per_token(dataclasses.replace(CFG, context=p + 1)) for p in range(7))
    with pytest.raises(ValueError):
        tf.TransformerConfig(vocab_size=5, context=4, layers=1, width=10, heads=3)


@pytest.mark.parametrize("features", [(8, 6), (6, 8)])  # I > O and I < O
def test_matmul_differentiates_as_autodiff_with_fast_products_only(
        features: tuple[int, int]) -> None:
    """Both gradients of ``tf.matmul`` equal autodiff's of ``x @ w`` (per lane under vmap
    too), its forward-mode derivative is the product rule's, no compiled product of the
    backward has a transposed right operand (the slow XNNPACK path the custom rule
    avoids; autodiff's backward of ``x @ w`` has two), and the weight gradient, which
    contracts the rows of x and g, puts the narrower of them on the left (its output's
    physical rows are min(I, O): Eigen runs it 1.5-2x faster so)."""
    n_in, n_out = features
    x_LxBxTxI = jax.random.normal(jax.random.key(0), (2, 3, 5, n_in))
    w_LxIxO = jax.random.normal(jax.random.key(1), (2, n_in, n_out))

    def grads(product):
        loss = lambda x, w: jnp.sum(jnp.sin(product(x, w)))  # noqa: E731
        return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))

    ours, autodiff = grads(tf.matmul), grads(lambda x, w: x @ w)
    for got, want in zip(ours(x_LxBxTxI, w_LxIxO), autodiff(x_LxBxTxI, w_LxIxO)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    x, w = x_LxBxTxI[0], w_LxIxO[0]  # forward mode too (the antidistillation tests' JVP)
    np.testing.assert_allclose(jax.jvp(tf.matmul, (x, w), (2 * x, -w))[1], x @ w, rtol=1e-5,
                               atol=1e-5)

    def products(product) -> list[tuple[bool, int | None]]:
        """Per compiled product: whether its right operand contracts over its first
        non-batch axis (plain) rather than its last (transposed), and for a product of
        two operands' rows (the weight gradient) the size of its output's major
        non-batch axis in memory."""
        hlo = grads(product).lower(x_LxBxTxI, w_LxIxO).compile().as_text()
        out = []
        for dims, layout, batch, lhs_axis, rhs_axis in re.findall(
                r"f32\[([\d,]+)\]\{([\d,]+)\} dot\(.*?lhs_batch_dims=\{([\d,]*)\}, "
                r"lhs_contracting_dims=\{(\d)\}, rhs_batch_dims=\{[\d,]*\}, "
                r"rhs_contracting_dims=\{(\d)\}", hlo):
            first = len(batch.split(","))  # the first non-batch axis
            rows = None
            if int(lhs_axis) == first == int(rhs_axis):
                major = [int(a) for a in layout.split(",") if int(a) >= first][-1]
                rows = int(dims.split(",")[major])
            out.append((int(rhs_axis) == first, rows))
        return out

    ours = products(tf.matmul)
    assert [plain for plain, _ in ours] == [True] * 3
    assert [rows for _, rows in ours if rows is not None] == [min(n_in, n_out)]
    assert [plain for plain, _ in products(lambda x, w: x @ w)].count(False) == 2


@pytest.mark.parametrize("segments", [1, 2, 5])
def test_kv_cache_decode_matches_full_forward(params: dict, segments: int) -> None:
    # every position reads the cache segments up to its own (tf.init_cache, 5: uneven)
    tokens = jax.random.randint(jax.random.key(2), (3, CFG.context), 0, CFG.vocab_size)
    logits_full, hidden_full = tf.apply(params, tokens, CFG)

    @jax.jit
    def decode_all(tokens_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
        def step(cache, pos):
            logits, hidden, cache = tf.decode_step(params, cache, tokens_BxL[:, pos], pos, CFG)
            return cache, (logits, hidden)
        cache = tf.init_cache(CFG, 3, segments=segments)
        assert len(cache[0][0]) == segments
        _, (logits, hidden) = jax.lax.scan(step, cache, jnp.arange(CFG.context))
        return jnp.swapaxes(logits, 0, 1), jnp.swapaxes(hidden, 0, 1)

    logits_dec, hidden_dec = decode_all(tokens)
    assert float(jnp.std(logits_full)) > 0.5  # the comparison is not trivially small
    np.testing.assert_allclose(logits_dec, logits_full, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(hidden_dec, hidden_full, atol=2e-5, rtol=1e-5)


def test_causal(params: dict) -> None:
    tokens = jax.random.randint(jax.random.key(3), (2, CFG.context), 0, CFG.vocab_size)
    changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % CFG.vocab_size)
    a, _ = tf.apply(params, tokens, CFG)
    b, _ = tf.apply(params, changed, CFG)
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert float(jnp.max(jnp.abs(a[:, 7:] - b[:, 7:]))) > 1e-3
    # A prefix alone gives the same logits as inside the longer sequence.
    c, _ = tf.apply(params, tokens[:, :5], CFG)
    np.testing.assert_allclose(c, a[:, :5], atol=1e-5)


def test_greedy_generate_is_repeated_argmax(params: dict) -> None:
    gen, compiled_before = tf.generate, tf._generate._cache_size()
    tokens, logits = gen(jax.random.key(4), params, CFG, batch=2, length=CFG.context,
                         bos_token=5, temperature=0.0, return_logits=True)
    assert tokens.shape == (2, CFG.context) and logits.shape == (2, CFG.context, 13)
    inputs = jnp.concatenate([jnp.full((2, 1), 5), tokens[:, :-1]], axis=1)
    full, _ = tf.apply(params, inputs, CFG)
    np.testing.assert_array_equal(tokens, jnp.argmax(full, -1))
    np.testing.assert_allclose(logits, full, atol=2e-5, rtol=1e-5)
    assert len(set(np.asarray(tokens).ravel().tolist())) > 1  # not a degenerate check
    # Sampling with temperature is reproducible per key and varies across keys.
    kw = dict(batch=2, length=CFG.context, bos_token=5, temperature=1.0, return_logits=True)
    s1, _ = gen(jax.random.key(5), params, CFG, **kw)
    s2, _ = gen(jax.random.key(5), params, CFG, **kw)
    s3, _ = gen(jax.random.key(6), params, CFG, **kw)
    np.testing.assert_array_equal(s1, s2)
    assert bool(jnp.any(s1 != s3))
    assert tf._generate._cache_size() == compiled_before + 1  # temperature is traced


def test_vmap_over_lanes() -> None:
    keys = jax.random.split(jax.random.key(7), 3)
    lanes = jax.vmap(lambda k: tf.init(k, CFG))(keys)
    tokens = jnp.ones((3, 7), jnp.int32)
    logits, _ = jax.vmap(lambda p: tf.apply(p, tokens, CFG))(lanes)
    single, _ = tf.apply(tf.init(keys[1], CFG), tokens, CFG)  # compiled already
    np.testing.assert_allclose(logits[1], single, atol=1e-6)
    gen = jax.jit(jax.vmap(lambda k, p: tf.generate(k, p, CFG, 2, 4, 0, 0.7, 3, 0.9, 0.05)))
    assert gen(keys, lanes).shape == (3, 2, 4)


def test_rows_sampled_in_blocks_equal_rows_sampled_together(params: dict, monkeypatch) -> None:
    # On CPU, generate samples blocks of rows one after another (tf.row_block); every row
    # keeps its own uniforms, so the tokens are those of one block of all rows.
    def sample() -> tuple[jax.Array, jax.Array]:
        jax.clear_caches()
        return tf.generate(jax.random.key(1), params, CFG, 48, 6, temperature=1.3,
                           return_logits=True)

    monkeypatch.setattr(tf, "CPU_ROW_BLOCK", 8)
    assert tf.row_block(48) == 8 and tf.row_block(36) == 6
    blocked, blocked_logits = sample()
    monkeypatch.setattr(tf, "CPU_ROW_BLOCK", 48)
    together, together_logits = sample()
    assert len(np.unique(np.asarray(together), axis=0)) > 40  # rows differ
    np.testing.assert_array_equal(blocked, together)
    np.testing.assert_allclose(blocked_logits, together_logits, atol=1e-5)


def test_cache_segments_change_no_token(params: dict, monkeypatch) -> None:
    # the sampler's cache holds only the sampled positions, in tf.cache_segments pieces
    def sample(segments: int) -> tuple[jax.Array, jax.Array]:
        monkeypatch.setattr(tf, "cache_segments", lambda length: segments)
        jax.clear_caches()
        return tf.generate(jax.random.key(2), params, CFG, 16, CFG.context - 1,
                           temperature=1.1, return_logits=True)

    whole, whole_logits = sample(1)
    for segments in (2, 3):
        tokens, logits = sample(segments)
        np.testing.assert_array_equal(tokens, whole)
        np.testing.assert_allclose(logits, whole_logits, atol=1e-5)
    assert len(np.unique(np.asarray(whole), axis=0)) > 12  # rows differ
