"""Mix policies: which rows each generation's fit sees."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.errors import ConfigError
from sim import experiment
from sim.config import Config
from sim.mix import Mix, MixConfig, MixPolicy, make_mix, synthetic_counts
from sim.worlds.categorical import CategoricalConfig
from sim.worlds.gaussian import GaussianConfig
from sim.worlds.linreg import LinregConfig

N, G = 10, 4


def _data(value: float) -> dict:
    return {"x": jnp.full((N, 2), value), "label": jnp.full((N,), value)}


def _mix(policy: MixPolicy, size: int = N) -> Mix:
    return Mix(policy, N, G, size)


def test_replace_sees_only_the_newest_synthetic_data():
    mix = _mix(MixPolicy.replace)
    state = mix.init(_data(0.0))
    _, data, w = mix(state, jax.random.key(0), jnp.asarray(1), None, _data(1.0), {})
    assert (data["x"] == 1.0).all() and w.shape == (N,) and (w == 1).all()


def test_accumulate_keeps_real_and_every_generation():
    mix = _mix(MixPolicy.accumulate)
    state = mix.init(_data(0.0))
    for g in range(1, G + 1):
        state, data, w = mix(state, jax.random.key(g), jnp.asarray(g), None, _data(g), {})
        assert w.shape == ((G + 1) * N,) and w.sum() == (g + 1) * N
        seen = np.asarray(data["label"])[np.asarray(w) > 0]
        assert sorted(set(seen.tolist())) == list(range(g + 1))  # real (0) and 1..g
        assert (np.bincount(seen.astype(int)) == N).all()


@pytest.mark.parametrize("size", [5, 15, 100])
def test_accumulate_subsample_sees_a_uniform_subsample_of_fixed_size(size):
    mix = _mix(MixPolicy.accumulate_subsample, size)
    state = mix.init(_data(0.0))
    g = 2
    for gen in range(1, g + 1):
        state, *_ = mix(state, jax.random.key(gen), jnp.asarray(gen), None, _data(gen), {})
    pool_rows = (g + 1) * N
    draw = jax.jit(jax.vmap(lambda k: mix(state, k, jnp.asarray(g), None, _data(g), {})[2]))
    w = np.asarray(draw(jax.random.split(jax.random.key(7), 4000)))
    assert (w.sum(1) == min(size, pool_rows)).all()
    assert (w[:, pool_rows:] == 0).all()  # never an empty slot
    p = min(size, pool_rows) / pool_rows  # each valid row is chosen with probability p
    freq = w[:, :pool_rows].mean(0)
    assert np.abs(freq - p).max() < 4.5 * np.sqrt(p * (1 - p) / 4000) + 1e-9


@pytest.mark.parametrize("fraction,n_real", [(0.0, 0), (0.25, 2), (0.5, 5), (1.0, 10)])
def test_fresh_uses_the_requested_share_of_new_real_rows(fraction, n_real):
    mix = _mix(MixPolicy.fresh)
    _, data, w = mix((), jax.random.key(0), jnp.asarray(1), _data(-1.0), _data(1.0),
                     {"mix.real_fraction": jnp.asarray(fraction)})
    assert (np.asarray(data["label"]) == -1.0).sum() == n_real  # round(0.25 * 10) = 2
    assert (np.asarray(data["x"])[:, 0] == np.asarray(data["label"])).all()
    assert (w == 1).all()


def test_make_mix_rejects_bad_values():
    with pytest.raises(ConfigError, match=r"mix.real_fraction=1.5 .*\[0, 1\]"):
        make_mix(MixConfig(policy=MixPolicy.fresh, real_fraction=1.5), N, G)
    with pytest.raises(ConfigError, match="mix.subsample_size=2"):
        make_mix(MixConfig(policy=MixPolicy.accumulate_subsample, subsample_size=2), N, G,
                 min_rows=3)
    assert make_mix(MixConfig(), N, G).subsample_size == N
    for edge in (0.0, 1.0):  # both ends of [0, 1] are allowed
        make_mix(MixConfig(policy=MixPolicy.fresh, real_fraction=edge), N, G)


def test_real_fraction_schedules_and_decay():
    fresh = Mix(MixPolicy.fresh, N, G, N, schedule=(1.0, 0.5, 0.0, 0.2))
    dyn = {"mix.real_fraction": jnp.float32(0.9)}  # ignored under a schedule
    real, synthetic = _data(0.0), _data(1.0)
    for g, expected in zip(range(1, G + 1), (10, 5, 0, 2)):
        _, data, _ = fresh((), jax.random.key(g), jnp.asarray(g), real, synthetic, dyn)
        assert int((data["label"] == 0).sum()) == expected
    decaying = Mix(MixPolicy.fresh, N, G, N)
    dyn = {"mix.real_fraction": jnp.float32(0.8), "mix.real_fraction_decay": jnp.float32(0.5)}
    for g, expected in zip(range(1, G + 1), (8, 4, 2, 1)):  # 0.8 * 0.5^(g - 1) * 10
        _, data, _ = decaying((), jax.random.key(g), jnp.asarray(g), real, synthetic, dyn)
        assert int((data["label"] == 0).sum()) == expected
    constant = {"mix.real_fraction": jnp.float32(0.8)}  # no decay given: none
    assert [float(decaying.real_fraction(jnp.asarray(g), constant))
            for g in range(1, G + 1)] == [np.float32(0.8)] * G


def test_a_decay_and_its_schedule_give_the_same_chain():
    base = Config(world=GaussianConfig(n_samples=20), generations=3, seeds=3, progress=False)
    decay = experiment.run(experiment.build(dataclasses.replace(base, mix=MixConfig(
        policy=MixPolicy.fresh, real_fraction=0.8, real_fraction_decay=0.5))))
    listed = experiment.run(experiment.build(dataclasses.replace(base, mix=MixConfig(
        policy=MixPolicy.fresh, real_fraction_schedule=(0.8, 0.4, 0.2)))))
    np.testing.assert_allclose(decay.w2_to_truth, listed.w2_to_truth, rtol=1e-5)  # same rows


def test_schedules_are_checked_in_one_line():
    with pytest.raises(ConfigError, match=r"^mix.real_fraction_schedule=\[0.5, 0.1\] is not "
                       r"allowed: one fraction in \[0, 1\] per generation 1..4 \(4 values\)"):
        make_mix(MixConfig(policy=MixPolicy.fresh, real_fraction_schedule=(0.5, 0.1)), N, G)
    with pytest.raises(ConfigError,
                       match=r"^mix.real_fraction_schedule=\[1, 1.5, 1, 1\] is not allowed"):
        make_mix(MixConfig(policy=MixPolicy.fresh, real_fraction_schedule=(1, 1.5, 1, 1)), N, G)
    assert make_mix(MixConfig(policy=MixPolicy.fresh, real_fraction_schedule=(0, 1, 0, 1)),
                    N, G).schedule == (0.0, 1.0, 0.0, 1.0)  # both ends allowed
    with pytest.raises(ConfigError, match=r"^mix.real_fraction_schedule=.* only with mix=fresh"):
        make_mix(MixConfig(policy=MixPolicy.replace, real_fraction_schedule=(0.5,) * G), N, G)
    with pytest.raises(ConfigError, match=r"^mix.real_fraction_decay=0.5 is not allowed: only "
                       r"1.0 with a mix.real_fraction_schedule"):
        make_mix(MixConfig(policy=MixPolicy.fresh, real_fraction_schedule=(0.5,) * G,
                           real_fraction_decay=0.5), N, G)
    with pytest.raises(ConfigError, match=r"^mix.real_fraction_decay=1.5 is not allowed"):
        make_mix(MixConfig(policy=MixPolicy.fresh, real_fraction_decay=1.5), N, G)


def test_synthetic_counts_from_a_schedule_or_a_decay():
    assert synthetic_counts(MixConfig(), N, G) == ()  # n every generation: no mask
    assert synthetic_counts(MixConfig(synthetic_schedule=(3, 10, 1, 7)), N, G) == (3, 10, 1, 7)
    # round(10 x 0.6^(g-1)): 10, 6, 3.6, 2.16
    assert synthetic_counts(MixConfig(synthetic_decay=0.6), N, G) == (10, 6, 4, 2)


def test_a_synthetic_count_schedule_masks_the_rows_after_n_g():
    mix = make_mix(MixConfig(policy=MixPolicy.accumulate, synthetic_schedule=(3, 10, 1, 7)),
                   N, G)
    assert mix.weighted  # the accumulated pool keeps a weight per row
    for g, n_g in zip(range(1, G + 1), (3, 10, 1, 7)):
        mask = np.asarray(jax.jit(mix.synthetic_mask)(jnp.asarray(g)))
        np.testing.assert_array_equal(mask, np.arange(N) < n_g)
        assert int(mix.synthetic_count(jnp.asarray(g))) == n_g
    state = mix.init(_data(0.0))
    for g in range(1, G + 1):
        state, data, w = mix(state, jax.random.key(g), jnp.asarray(g), None, _data(g), {},
                             mix.synthetic_mask(jnp.asarray(g)))
    seen = np.asarray(data["label"])[np.asarray(w) > 0].astype(int)
    np.testing.assert_array_equal(np.bincount(seen), [N, 3, 10, 1, 7])  # real, then n_g each
    fresh = make_mix(MixConfig(policy=MixPolicy.fresh, synthetic_schedule=(3, 10, 1, 7)), N, G)
    dyn = {"mix.real_fraction": jnp.float32(0.5)}
    _, data, w = fresh((), jax.random.key(0), jnp.asarray(1), _data(-1.0), _data(1.0), dyn,
                       fresh.synthetic_mask(jnp.asarray(1)))
    seen = np.asarray(data["label"])[np.asarray(w) > 0]
    assert (seen == -1).sum() == 5 and (seen == 1).sum() == 3  # 5 real slots, then n_1 = 3


GAUSSIAN = Config(world=GaussianConfig(n_samples=20), generations=3, seeds=3, progress=False)


@pytest.mark.parametrize("mix,message", [
    (MixConfig(synthetic_schedule=(5, 10)), r"mix.synthetic_schedule=\[5, 10\] is not allowed: "
     r"one integer count in \[3, 20\] \(at most world.n_samples, the pool size; at least 3, "
     r"the fewest a fit under mix=replace needs\) per generation 1..3 \(3 values\)"),
    (MixConfig(synthetic_schedule=(5, 21, 5)), r"mix.synthetic_schedule=\[5, 21, 5\]"),
    (MixConfig(synthetic_schedule=(5, 2, 5)), r"mix.synthetic_schedule=\[5, 2, 5\]"),
    (MixConfig(policy=MixPolicy.accumulate, synthetic_schedule=(5, -1, 5)),
     r"mix.synthetic_schedule=\[5, -1, 5\] is not allowed: one integer count in \[1, 20\]"),
    (MixConfig(synthetic_schedule=(5, 2.5, 5)), r"mix.synthetic_schedule=\[5, 2.5, 5\]"),
    (MixConfig(synthetic_decay=0.0), r"mix.synthetic_decay=0.0 is not allowed: a factor in "
                                     r"\(0, 1\]"),
    (MixConfig(synthetic_decay=0.3), r"mix.synthetic_decay=0.3 is not allowed: a factor whose "
     r"counts round\(20 x decay\^\(g-1\)\) stay >= 3 .* this one reaches 2"),
    (MixConfig(synthetic_decay=0.5, synthetic_schedule=(5, 5, 5)),
     r"mix.synthetic_decay=0.5 is not allowed: only 1.0 with a mix.synthetic_schedule"),
    (MixConfig(policy=MixPolicy.fresh, real_fraction=0.5, synthetic_schedule=(10, 11, 5)),
     r"mix.synthetic_schedule=\[10, 11, 5\] is not allowed: counts that with the real rows "
     r"fill at most the world.n_samples=20 slots .* generation 2 has 10 real and 11"),
    (MixConfig(policy=MixPolicy.fresh, real_fraction=0.5, synthetic_decay=0.9),
     r"mix.synthetic_decay=0.9 is not allowed: counts that with the real rows fill at most "
     r"the world.n_samples=20 slots .* generation 1 has 10 real and 20"),
])
def test_synthetic_count_settings_are_refused_in_one_line_before_compute(mix, message):
    with pytest.raises(ConfigError, match="^" + message) as error:
        experiment.build(dataclasses.replace(GAUSSIAN, mix=mix))
    assert "\n" not in str(error.value)


def _same_chain(cfg, n: int, **mix) -> None:
    plain = experiment.run(experiment.build(cfg))
    listed = experiment.run(experiment.build(dataclasses.replace(cfg, mix=dataclasses.replace(
        cfg.mix, synthetic_schedule=(n,) * cfg.generations, **mix))))
    np.testing.assert_array_equal(listed.synthetic_count.isel(seed=0),
                                  [0] + [n] * cfg.generations)
    for name in plain.data_vars:
        if "seed" in plain[name].dims:
            np.testing.assert_allclose(listed[name], plain[name], rtol=2e-5, atol=1e-6,
                                       err_msg=name)


@pytest.mark.parametrize("world,policy", [
    (GaussianConfig(n_samples=20), MixPolicy.replace),  # refit with a traced count
    (GaussianConfig(n_samples=20), MixPolicy.accumulate),  # sample_statistics, traced count
    (GaussianConfig(n_samples=20), MixPolicy.fresh),  # the data path
    (CategoricalConfig(n_samples=50, vocab_size=20), MixPolicy.replace),  # masked statistics
    (LinregConfig(n_samples=20), MixPolicy.accumulate_subsample),
])
def test_a_schedule_of_n_every_generation_is_the_unscheduled_chain(world, policy):
    cfg = dataclasses.replace(GAUSSIAN, world=world, mix=MixConfig(policy=policy))
    _same_chain(cfg, world.n_samples)
