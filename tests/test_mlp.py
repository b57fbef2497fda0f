"""MLP classifier: shapes, counts, FLOPs, vmap over lanes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.models import mlp

CFG = mlp.MLPConfig(features=10, classes=4, hidden=(8, 6))


def test_shapes_counts_flops() -> None:
    params = mlp.init(jax.random.key(0), CFG)
    logits, hidden = mlp.apply(params, jnp.ones((5, 10)), CFG)
    assert logits.shape == (5, 4) and hidden.shape == (5, 6)
    assert CFG.hidden_width == 6
    assert mlp.param_count(params) == 10 * 8 + 8 + 8 * 6 + 6 + 6 * 4 + 4
    assert mlp.flops_per_example(CFG) == 2 * (10 * 8 + 8 * 6 + 6 * 4)
    assert mlp.train_flops_per_example(CFG) == 3 * mlp.flops_per_example(CFG)
    assert bool(jnp.all(hidden >= 0))  # relu
    k = np.asarray(params["dense_0"]["kernel"])
    assert 0.15 < k.std() < 0.5 and np.all(np.asarray(params["dense_0"]["bias"]) == 0)


def test_no_hidden_layers_and_config_checks() -> None:
    cfg = mlp.MLPConfig(features=3, classes=2, hidden=[])
    params = mlp.init(jax.random.key(1), cfg)
    x = jnp.arange(6.0).reshape(2, 3)
    logits, hidden = mlp.apply(params, x, cfg)
    np.testing.assert_allclose(hidden, x)
    np.testing.assert_allclose(logits, x @ params["head"]["kernel"], rtol=1e-6)
    with pytest.raises(ValueError):
        mlp.MLPConfig(features=3, classes=2, activation="swish")


def test_vmap_over_lanes() -> None:
    keys = jax.random.split(jax.random.key(2), 3)
    lanes = jax.vmap(lambda k: mlp.init(k, CFG))(keys)
    x = jax.random.normal(jax.random.key(3), (5, 10))
    logits, _ = jax.vmap(lambda p: mlp.apply(p, x, CFG))(lanes)
    single, _ = mlp.apply(jax.tree_util.tree_map(lambda a: a[2], lanes), x, CFG)
    np.testing.assert_allclose(logits[2], single, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(logits[0] - logits[1]).max()) > 1e-3
