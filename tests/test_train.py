"""Compiled training loop: learning, weighted minibatches, vmap over lanes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sim import objectives as ob
from sim import train as tr
from sim.models import mlp
from sim.models import transformer as tf

MLP_CFG = mlp.MLPConfig(features=4, classes=3, hidden=(8,))


def _mlp_loss(params: dict, batch: dict) -> jax.Array:
    logits, _ = mlp.apply(params, batch["x"], MLP_CFG)
    return ob.hard(logits, batch["y"])


def _mlp_data(seed: int, n: int = 32) -> dict:
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, 4)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray((x[:, 0] > 0) + (x[:, 1] > 0), jnp.int32)}


@functools.partial(jax.jit, static_argnames=("steps",))
def _train_mlp(key: jax.Array, params: dict, data: dict, weights: jax.Array,
               lr: jax.Array | float = 1e-2, steps: int = 60) -> tuple[dict, jax.Array]:
    opt = tr.make_optimizer(lr, warmup_steps=5, total_steps=steps, clip_norm=1.0)
    return tr.train(key, params, _mlp_loss, data, weights, steps, 8, opt)


def test_transformer_learns_a_deterministic_sequence() -> None:
    cfg = tf.TransformerConfig(vocab_size=8, context=16, layers=1, width=16, heads=2)
    offsets = np.arange(16)[:, None]
    tokens = jnp.asarray((3 * (np.arange(17)[None, :] + offsets)) % 8, jnp.int32)  # N x 17

    def loss_fn(params: dict, batch: jax.Array) -> jax.Array:
        logits, _ = tf.apply(params, batch[:, :-1], cfg)
        return ob.hard(logits, batch[:, 1:])

    run = jax.jit(lambda k, p: tr.train(k, p, loss_fn, tokens, jnp.ones(16), 120, 8,
                                        tr.make_optimizer(1e-2)))
    _, losses = run(jax.random.key(1), tf.init(jax.random.key(0), cfg))
    losses = np.asarray(losses)
    assert losses.shape == (120,)
    assert losses[0] > 1.5  # ~log(8) at init
    assert losses[-10:].mean() < 0.1 * losses[0], losses[::10]


def test_draw_indices_never_draws_zero_weight_rows() -> None:
    weights = jnp.array([0, 1, 0, 0, 3, 1, 0, 0], jnp.float32)  # leading and trailing 0s
    idx = np.asarray(tr.draw_indices(jax.random.key(2), weights, 50_000))
    counts = np.bincount(idx, minlength=8)
    assert np.all(counts[np.asarray(weights) == 0] == 0)
    p = np.asarray(weights) / 5.0
    se = np.sqrt(p * (1 - p) / 50_000)
    assert np.all(np.abs(counts / 50_000 - p) <= 4 * se + 1e-12)


def test_zero_weight_rows_never_influence_training() -> None:
    data = _mlp_data(0)
    weights = jnp.asarray(np.arange(32) % 3 != 0, jnp.float32)
    params0 = mlp.init(jax.random.key(3), MLP_CFG)
    garbage = {"x": jnp.where(weights[:, None] > 0, data["x"], jnp.nan),
               "y": jnp.where(weights > 0, data["y"], 99)}
    key = jax.random.key(4)
    p_clean, l_clean = _train_mlp(key, params0, data, weights)
    p_bad, l_bad = _train_mlp(key, params0, garbage, weights)
    assert np.all(np.isfinite(np.asarray(l_bad)))
    jax.tree_util.tree_map(np.testing.assert_array_equal, p_clean, p_bad)
    np.testing.assert_array_equal(l_clean, l_bad)
    assert float(l_clean[-10:].mean()) < float(l_clean[:5].mean())
    # All weights 0: nothing changes and the losses say so (NaN).
    p_none, l_none = _train_mlp(key, params0, data, jnp.zeros(32))
    jax.tree_util.tree_map(np.testing.assert_array_equal, p_none, params0)
    assert bool(jnp.all(jnp.isnan(l_none)))


def test_vmap_over_lanes_matches_single_runs() -> None:
    data = _mlp_data(1)
    keys = jax.random.split(jax.random.key(5), 2)
    params = jax.vmap(lambda k: mlp.init(k, MLP_CFG))(keys)
    weights = jnp.stack([jnp.ones(32), (jnp.arange(32) < 20).astype(jnp.float32)])
    lrs = jnp.array([1e-2, 0.0])  # a traced, per-lane learning rate
    p_lanes, l_lanes = jax.vmap(_train_mlp, in_axes=(0, 0, None, 0, 0))(
        keys, params, data, weights, lrs)
    for lane in range(2):
        one = jax.tree_util.tree_map(lambda a: a[lane], params)
        p_one, l_one = _train_mlp(keys[lane], one, data, weights[lane], lrs[lane])
        np.testing.assert_allclose(l_lanes[lane], l_one, rtol=1e-5, atol=1e-6)
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a[lane], b, rtol=1e-5, atol=1e-6),
            p_lanes, p_one)
    # Lane 1 has learning rate 0: its params did not move.
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a[1], b[1]),
                           p_lanes, params)


def test_raveled_adamw_is_optax_adamw_with_matrices_decayed_and_a_few_state_vectors() -> None:
    """The optimiser runs on all leaves raveled into one vector: the same updates as optax's
    leaf-by-leaf AdamW (decay masked to matrices, global-norm clipping), and a state of a
    few vectors whatever the number of leaves."""
    r = np.random.default_rng(0)
    shapes = {"kernel": (3, 4), "bias": (4,), "embedding": (5, 3), "scale": (3,)}
    params = {k: jnp.asarray(r.standard_normal(s), jnp.float32) for k, s in shapes.items()}
    ours = tr.make_optimizer(0.1, 0.3, warmup_steps=1, total_steps=4, clip_norm=0.5)
    reference = optax.chain(
        optax.clip_by_global_norm(0.5),
        optax.adamw(tr.warmup_cosine_schedule(0.1, 1, 4), weight_decay=0.3,
                    mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)))
    state, ref_state = ours.init(params), reference.init(params)
    assert len(jax.tree.leaves(state)) <= 4 < len(jax.tree.leaves(ref_state))
    for _ in range(4):
        grads = {k: jnp.asarray(r.standard_normal(s), jnp.float32) for k, s in shapes.items()}
        update, state = ours.update(grads, state, params)
        expected, ref_state = reference.update(grads, ref_state, params)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                     update, expected)
        params = optax.apply_updates(params, update)


def test_a_fit_compiles_the_initial_draw_once() -> None:
    """Fresh parameters enter the training loop as one vector, so XLA computes the normal
    draw's inverse error function in one loop, not once per leaf (compile time)."""
    cfg = tf.TransformerConfig(vocab_size=8, context=4, layers=2, width=8, heads=2)

    def fit(key: jax.Array) -> tuple:
        return tr.train(key, tf.init(key, cfg), lambda p, b: jnp.mean(tf.apply(p, b, cfg)[0]),
                        jnp.zeros((6, 4), jnp.int32), jnp.ones(6), 1, 2)

    compiled = jax.jit(fit).lower(jax.random.key(0)).compile().as_text()
    fusions = [c for c in compiled.split("\n\n") if c.startswith("%fused_computation")]
    assert sum("erf_inv" in c for c in fusions) == 1


def test_make_optimizer_schedule() -> None:
    opt = tr.make_optimizer(1.0, weight_decay=0.0, warmup_steps=2, total_steps=6)
    assert isinstance(opt, optax.GradientTransformation)
    p = {"w": jnp.zeros(())}
    state = opt.init(p)
    steps = []
    for _ in range(6):
        update, state = opt.update({"w": jnp.ones(())}, state, p)
        steps.append(-float(update["w"]))
    # Adam's first steps are ~lr: 0 at step 0 (warmup from 0), peak at 2, decaying after.
    assert steps[0] == 0.0 and abs(steps[2] - 1.0) < 1e-3 and steps[5] < steps[3] < steps[2]


def test_warmup_cosine_schedule_matches_optax() -> None:
    """Linear warmup to the peak, cosine to end_fraction * peak at total_steps, against
    optax's own schedule (whose decay_steps include the warmup)."""
    ours = tr.warmup_cosine_schedule(2.0, warmup_steps=3, total_steps=11, end_fraction=0.1)
    reference = optax.warmup_cosine_decay_schedule(0.0, 2.0, warmup_steps=3, decay_steps=11,
                                                   end_value=0.2)
    steps = np.arange(14)
    np.testing.assert_allclose([float(ours(s)) for s in steps],
                               [float(reference(s)) for s in steps], rtol=1e-6, atol=1e-7)


def _decay_updates(train, params) -> list:
    """Updates of zero gradients: what weight decay alone does, step by step."""
    opt = tr.optimizer_for(train, {"train.lr": 0.5, "train.weight_decay": 0.1})
    state, out = opt.init(params), []
    for _ in range(train.steps):
        update, state = opt.update(jax.tree.map(jnp.zeros_like, params), state, params)
        out.append(update)
    return out


def test_weight_decay_touches_matrices_only_and_follows_the_schedule() -> None:
    params = {"kernel": jnp.ones((2, 3)), "embedding": jnp.ones((4, 2)), "bias": jnp.ones(3),
              "scale": jnp.ones(2)}
    constant = _decay_updates(tr.TrainConfig(steps=6, cosine=False), params)
    for update in constant:  # AdamW: -lr * weight_decay * param on matrices, 0 elsewhere
        np.testing.assert_allclose(update["kernel"], -0.05, rtol=1e-6)
        np.testing.assert_allclose(update["embedding"], -0.05, rtol=1e-6)
        assert not np.any(update["bias"]) and not np.any(update["scale"])
    cosine = _decay_updates(tr.TrainConfig(steps=6, cosine=True), params)
    decay = [-float(u["kernel"][0, 0]) / 0.05 for u in cosine]  # lr(t) / lr
    np.testing.assert_allclose(decay, [0.5 * (1 + np.cos(np.pi * t / 6)) for t in range(6)],
                               rtol=1e-5, atol=1e-7)


def test_microbatches_give_the_whole_minibatch_loss_and_gradient() -> None:
    """Slices of a minibatch taken in turn and averaged: the same loss and gradient as the
    whole minibatch at once (float rounding apart), and the same trained model."""
    cfg = tf.TransformerConfig(vocab_size=8, context=8, layers=1, width=16, heads=2)
    tokens = jax.random.randint(jax.random.key(0), (16, 9), 0, 8)
    params = tf.init(jax.random.key(1), cfg)

    def loss_fn(params: dict, batch: jax.Array) -> jax.Array:
        logits, _ = tf.apply(params, batch[:, :-1], cfg)
        return ob.hard(logits, batch[:, 1:])

    whole = jax.jit(jax.value_and_grad(loss_fn))(params, tokens)
    for slices in (2, 4, 16):
        sliced = jax.jit(tr.sliced_value_and_grad(loss_fn, slices))(params, tokens)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5,
                                                                        atol=1e-7),
                               sliced, whole)
    # unequal slices are refused (they would weigh rows unequally)
    try:
        tr.sliced_value_and_grad(loss_fn, 3)(params, tokens)
        raise AssertionError("16 rows split into 3 microbatches")
    except ValueError as e:
        assert "3 equal microbatches" in str(e)

    def fit(microbatches: int) -> tuple[dict, jax.Array]:
        return jax.jit(lambda k, p: tr.train(k, p, loss_fn, tokens, jnp.ones(16), 5, 8,
                                             tr.make_optimizer(1e-2),
                                             microbatches=microbatches))(
            jax.random.key(2), params)

    (p_whole, l_whole), (p_sliced, l_sliced) = fit(1), fit(4)
    np.testing.assert_allclose(l_sliced, l_whole, rtol=1e-5)
    # Adam divides each gradient entry by its own scale, so an entry near 0 whose rounding
    # differs moves by up to a fraction of the learning rate (1e-2): 1e-4 is 1% of a step
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4),
                           p_sliced, p_whole)


def test_a_loss_that_takes_a_key_is_not_sliced() -> None:
    """Each slice would draw its own randomness (e.g. an on-policy coin per slice instead
    of per minibatch), so ``train`` refuses the combination."""
    data = _mlp_data(0)
    try:
        tr.train(jax.random.key(0), mlp.init(jax.random.key(1), MLP_CFG),
                 lambda p, b, k: _mlp_loss(p, b), data, jnp.ones(32), 2, 8,
                 loss_takes_key=True, microbatches=2)
        raise AssertionError("a keyed loss was sliced")
    except ValueError as e:
        assert "takes a key" in str(e)


def test_train_microbatches_keep_a_slice_in_cache_on_cpu_only(monkeypatch) -> None:
    lm_bench = tf.TransformerConfig(vocab_size=65, context=64, layers=2, width=128, heads=4)
    default = tf.TransformerConfig(vocab_size=33, context=32, layers=2, width=64, heads=4)
    # lm benchmark: a row's MLP hidden layer is 64 x 512 floats (128 KiB): 16 rows a slice
    assert tf.train_microbatches(lm_bench, 64) == 4
    assert tf.train_microbatches(lm_bench, 48) == 3
    assert tf.train_microbatches(lm_bench, 17) == 1  # a prime: slices of 1 row are too short
    assert tf.train_microbatches(default, 32) == 1  # 32 rows: 1 MiB
    # long contexts: the attention scores (heads x context a position) are the widest
    long = tf.TransformerConfig(vocab_size=65, context=512, layers=1, width=64, heads=8)
    assert tf.train_microbatches(long, 8) == 8  # 4 x 512 x 8 x 512 = 8 MiB a row
    # wide models: slices of 2 MiB would be 128 tokens; 512 is the floor
    wide = tf.TransformerConfig(vocab_size=65, context=128, layers=4, width=1024, heads=8)
    assert tf.train_microbatches(wide, 32) == 8
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert tf.train_microbatches(lm_bench, 64) == 1
