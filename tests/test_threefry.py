"""sim.threefry: jax.random's hash as straight-line code on the CPU, with the same keys and
numbers as JAX's loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim import jaxlib_at_least
from sim.threefry import lower_unrolled

CPU_ONLY = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not jaxlib_at_least(0, 10),
    reason="importing sim lowers the hash on the CPU, and only with jaxlib 0.10 or newer")


def _draws(key):
    k1, k2 = jax.random.split(key)
    keys = jax.random.split(jax.random.fold_in(k1, 7), 5)
    return {"keys": jax.random.key_data(keys),
            "bits": jax.random.bits(k2, (3, 33)),
            "normal": jax.vmap(lambda k: jax.random.normal(k, (10,)))(keys),
            "gamma": jax.random.gamma(k2, jnp.float32([0.5, 2.0, 40.0]))}


@CPU_ONLY
def test_importing_sim_lowers_the_hash_without_a_loop():
    hlo = jax.jit(lambda k: jax.random.bits(k, (64,))).lower(jax.random.key(0)).as_text()
    assert "while" not in hlo


@CPU_ONLY
def test_the_same_keys_and_numbers_as_jaxs_loop():
    unrolled = jax.jit(_draws)(jax.random.key(3))
    try:
        assert lower_unrolled(False)
        jax.clear_caches()
        hlo = jax.jit(lambda k: jax.random.bits(k, (64,))).lower(jax.random.key(0)).as_text()
        assert "while" in hlo  # the comparison is with JAX's loop
        rolled = jax.jit(_draws)(jax.random.key(3))
    finally:
        lower_unrolled(True)
        jax.clear_caches()
    for name in unrolled:
        np.testing.assert_array_equal(unrolled[name], rolled[name], err_msg=name)
