"""sim.draws: the same numbers as jax.random, drawn flat."""

import jax
import numpy as np
import pytest

from sim import draws


@pytest.mark.parametrize("shape", [(), (10,), (16,), (45,), (100, 10), (3, 2, 5)])
def test_a_flat_draw_holds_the_numbers_of_the_shaped_one(shape):
    key = jax.random.key(7)
    np.testing.assert_array_equal(draws.normal(key, shape), jax.random.normal(key, shape))


def test_the_same_numbers_under_vmap():
    keys = jax.random.split(jax.random.key(0), 3)
    np.testing.assert_array_equal(jax.vmap(lambda k: draws.normal(k, (4, 10)))(keys),
                                  jax.vmap(lambda k: jax.random.normal(k, (4, 10)))(keys))


@pytest.mark.parametrize("num", [2, 5, 16, 63])
def test_split_gives_jax_random_splits_keys(num):
    key = jax.random.key(11)
    np.testing.assert_array_equal(jax.random.key_data(draws.split(key, num)),
                                  jax.random.key_data(jax.random.split(key, num)))
