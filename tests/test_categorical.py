"""The categorical (unigram) world against hand-computed cases and closed forms.

With n tokens a generation, ``mix=replace`` and no smoothing, generation g's model is
p_g = c_g / n with c_g ~ Multinomial(n, r_g): r_0 = q (the Zipf truth), and r_g is the
previous model's sampling distribution, r_g proportional to p_{g-1}^(1/T) at temperature T.

- Temperature 1 (Wright-Fisher drift): E[p_g | p_{g-1}] = p_{g-1}, so E[p_g] = q. For the
  heterozygosity H(p) = 1 - sum_i p_i^2, E[c_i^2] = n r_i (1 - r_i) + n^2 r_i^2 gives
  E[sum_i p_i^2 | r] = (1 - 1/n) sum_i r_i^2 + 1/n, i.e. E[H(p_g) | r_g] = (1 - 1/n) H(r_g),
  and by induction from r_0 = q: E[H(p_g)] = (1 - 1/n)^(g+1) H(q).
- Temperature T, one step, exactly at any n: E[p_g | p_{g-1}] = r_g and Pearson's
  E[n sum_{r_i > 0} (p_i - r_i)^2 / r_i | r_g] = sum_i (1 - r_i) = k - 1, k = #{r_i > 0}.
- Temperature T on an infinite sample: p_g proportional to q^(1/T^g). At finite n the
  lanes' mean is off by O(1/n) (the map is non-linear), below the tolerance here.

Tolerances are 4 standard errors over seeds (tests/stats.py), never tuned.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stats import assert_mean

from sim import experiment, sampling
from sim.config import Config
from sim.distill import DistillConfig, Objective, SamplingConfig, StudentConfig
from sim.errors import ConfigError
from sim.grid import GridConfig, SamplingGrid
from sim.mix import MixConfig, MixPolicy
from sim.worlds.categorical import (CategoricalConfig, CategoricalWorld, fit_counts,
                                    sample_tokens, token_counts)
from sim.worlds.markov_lm import zipf


def _world(**kwargs) -> CategoricalWorld:
    return CategoricalWorld(CategoricalConfig(**kwargs), DistillConfig(), SamplingConfig(),
                            None, StudentConfig())


def _run(world: CategoricalConfig, generations: int, seeds: int, policy=MixPolicy.replace,
         **sampling_settings):
    cfg = Config(world=world, mix=MixConfig(policy=policy, real_fraction=0.3),
                 sampling=SamplingConfig(**sampling_settings), generations=generations,
                 seeds=seeds, progress=False)
    return experiment.run(experiment.build(cfg))


def _probabilities(ds) -> np.ndarray:
    """token_probability as float64, (generation, seed, token)."""
    return ds.token_probability.transpose("generation", "seed", "token").values.astype(float)


def test_fit_is_the_smoothed_frequencies_and_ignores_zero_weights():
    tokens, weights = jnp.array([0, 0, 1, 3]), jnp.array([1.0, 1.0, 1.0, 0.0])
    counts = token_counts(tokens, weights, 4)
    np.testing.assert_allclose(counts, [2, 1, 0, 0])
    np.testing.assert_allclose(fit_counts(counts, 0.0), [2 / 3, 1 / 3, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(fit_counts(counts, 1.0), np.array([3, 2, 1, 1]) / 7, rtol=1e-6)
    world = _world(vocab_size=4, smoothing=0.5)
    fitted = world.fit(None, tokens, weights, {})
    np.testing.assert_allclose(fitted, np.array([2.5, 1.5, 0.5, 0.5]) / 5, rtol=1e-6)
    # the statistics are additive over rows: fitting their sum is fitting the pooled data
    halves = [world.statistics(tokens[i:i + 2], weights[i:i + 2]) for i in (0, 2)]
    np.testing.assert_allclose(world.fit_statistics(halves[0] + halves[1]), fitted, rtol=1e-6)


def test_metrics_by_hand():
    world = _world(vocab_size=4, zipf_exponent=1.0)
    q = np.array([12, 6, 4, 3]) / 25  # 1, 1/2, 1/3, 1/4 normalised by 25/12
    np.testing.assert_allclose(world.q_V, q, rtol=1e-6)
    m = world.measure(None, jnp.array([0.5, 0.5, 0.0, 0.0]))
    assert np.isposinf(m["kl_to_truth"])  # the model lost tokens the truth has
    np.testing.assert_allclose(m["kl_from_truth"],
                               0.5 * np.log(0.5 / q[0]) + 0.5 * np.log(0.5 / q[1]), rtol=1e-5)
    np.testing.assert_allclose(m["entropy"], np.log(2), rtol=1e-6)
    assert int(m["support_size"]) == 2
    assert float(m["tail_mass"]) == 0.0  # tail_rank 0: the tokens beyond rank 4 // 2
    np.testing.assert_allclose(m["token_probability"], [0.5, 0.5, 0, 0])
    m = world.measure(None, jnp.asarray(q, jnp.float32))
    np.testing.assert_allclose([m["kl_to_truth"], m["kl_from_truth"]], 0.0, atol=1e-6)
    np.testing.assert_allclose(m["entropy"], -(q * np.log(q)).sum(), rtol=1e-5)
    np.testing.assert_allclose(m["tail_mass"], 7 / 25, rtol=1e-5)
    assert int(m["support_size"]) == 4
    p = np.array([0.1, 0.2, 0.3, 0.4])
    m = world.measure(None, jnp.asarray(p, jnp.float32))
    np.testing.assert_allclose(m["kl_to_truth"], (q * np.log(q / p)).sum(), rtol=1e-5)
    assert "token_probability" not in _world(token_probability=False).measure(
        None, jnp.full(100, 0.01))


@pytest.mark.parametrize("settings", [
    dict(temperature=0.0), dict(temperature=0.5), dict(temperature=1.0),
    dict(temperature=2.0), dict(top_k=2), dict(top_p=0.6), dict(min_p=0.3),
    dict(temperature=0.7, top_k=3, top_p=0.9, min_p=0.05)])
def test_sampling_keeps_lost_tokens_lost(settings):
    """sim.sampling on log p with -inf entries: a proper distribution, zero where p is."""
    p = jnp.array([0.0, 0.4, 0.0, 0.3, 0.2, 0.1, 0.0])
    r = np.asarray(sampling.probabilities(jnp.log(p), **settings), np.float64)
    assert np.isfinite(r).all() and abs(r.sum() - 1) < 1e-6
    assert (r[np.asarray(p) == 0] == 0).all()
    if settings.get("temperature") == 0.0:
        np.testing.assert_array_equal(r, np.eye(7)[1])


def test_sampled_tokens_follow_the_distribution():
    p = np.array([0.0, 0.5, 0.25, 0.0, 0.125, 0.0625, 0.0625, 0.0])
    n = 200_000
    tokens = np.asarray(sample_tokens(jax.random.key(0), jnp.asarray(p, jnp.float32), n))
    counts = np.bincount(tokens, minlength=p.size)
    assert tokens.dtype == np.int32 and counts[p == 0].sum() == 0
    # Pearson's statistic has mean k - 1 and variance about 2 (k - 1), k = 5 categories
    chi2 = ((counts - n * p)[p > 0] ** 2 / (n * p[p > 0])).sum()
    assert chi2 < 4 + 4 * np.sqrt(2 * 4)
    # greedy as the chain samples it: every token is the argmax
    world = _world(vocab_size=8)
    greedy = CategoricalWorld(world.cfg, DistillConfig(), SamplingConfig(temperature=0.0),
                              None, StudentConfig())
    assert (np.asarray(greedy.generate(jax.random.key(1), jnp.asarray(p), 100, {})) == 1).all()


def test_temperature_one_is_neutral_drift():
    """Under replace E[p_g] = q (a martingale), the heterozygosity decays as
    (1 - 1/n)^(g+1) H(q), and tokens are only ever lost."""
    n, v, generations = 40, 12, 20
    ds = _run(CategoricalConfig(n_samples=n, vocab_size=v), generations, seeds=3000)
    p_GxLxV = _probabilities(ds)
    q = zipf(v, 1.0)
    heterozygosity = 1 - (p_GxLxV ** 2).sum(-1)
    for g in (0, 1, 5, generations):
        assert_mean(p_GxLxV[g, :, 0], q[0])
        assert_mean(ds.tail_mass.sel(generation=g), q[v // 2:].sum())
        assert_mean(heterozygosity[g], (1 - 1 / n) ** (g + 1) * (1 - (q ** 2).sum()))
    support = p_GxLxV > 0
    assert not (support[1:] & ~support[:-1]).any()  # a token lost is never regained
    np.testing.assert_array_equal(ds.support_size.values, support.sum(-1))
    assert np.isposinf(ds.kl_to_truth.values[support.sum(-1) < v]).all()
    assert np.isfinite(ds.kl_from_truth.values).all()


@pytest.mark.parametrize("policy", [MixPolicy.accumulate, MixPolicy.fresh])
def test_the_truth_is_kept_in_expectation_under_other_mixes(policy):
    """E[p_g] = q under accumulate (summed counts) and fresh (real rows first) as well."""
    n, v, generations = 40, 12, 4
    ds = _run(CategoricalConfig(n_samples=n, vocab_size=v), generations, seeds=2000,
              policy=policy)
    p_GxLxV = _probabilities(ds)
    q = zipf(v, 1.0)
    for g in (1, generations):
        assert_mean(p_GxLxV[g, :, 0], q[0])
        assert_mean(ds.tail_mass.sel(generation=g), q[v // 2:].sum())


N, V, GENERATIONS, TEMPERATURES = 10_000, 10, 4, [0.8, 1.25]


@pytest.fixture(scope="module")
def tempered():
    """n = 10,000 tokens, at temperatures 0 (greedy), 0.8 and 1.25 as lanes of one program."""
    cfg = Config(world=CategoricalConfig(n_samples=N, vocab_size=V), generations=GENERATIONS,
                 seeds=200, progress=False,
                 grid=GridConfig(sampling=SamplingGrid(temperature=[0.0, *TEMPERATURES])))
    return experiment.run(experiment.build(cfg))


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_one_step_of_temperature_is_exact(tempered, temperature):
    """Given p_{g-1}, n p_g ~ Multinomial(n, r) with r proportional to p_{g-1}^(1/T)."""
    p_GxLxV = _probabilities(tempered.sel({"sampling.temperature": temperature}))
    r_GxLxV = p_GxLxV ** (1 / temperature)
    r_GxLxV /= r_GxLxV.sum(-1, keepdims=True)
    for g in range(1, GENERATIONS + 1):
        r, p = r_GxLxV[g - 1], p_GxLxV[g]
        assert_mean(p[:, 0] - r[:, 0], 0.0)
        assert_mean(p[:, V // 2:].sum(-1) - r[:, V // 2:].sum(-1), 0.0)
        pearson = N * np.where(r > 0, (p - r) ** 2 / np.where(r > 0, r, 1), 0.0).sum(-1)
        assert_mean(pearson, ((r > 0).sum(-1) - 1).mean(), sd=pearson.std(ddof=1))


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_temperature_on_a_large_sample_raises_the_truth_to_a_power(tempered, temperature):
    """p_g proportional to q^(1/T^g): T < 1 sharpens the law, T > 1 flattens it."""
    p_GxLxV = _probabilities(tempered.sel({"sampling.temperature": temperature}))
    q = zipf(V, 1.0)
    for g in range(GENERATIONS + 1):
        expected = q ** (1 / temperature ** g)
        expected /= expected.sum()
        for token in (0, 1, V // 2, V - 1):
            assert_mean(p_GxLxV[g, :, token], expected[token])


def test_greedy_keeps_only_the_argmax(tempered):
    ds = tempered.sel({"sampling.temperature": 0.0})
    p_GxLxV = _probabilities(ds)
    assert (ds.support_size.sel(generation=0) > 1).all()
    assert (ds.support_size.sel(generation=slice(1, None)) == 1).all()
    np.testing.assert_array_equal(p_GxLxV[1].argmax(-1), p_GxLxV[0].argmax(-1))


@pytest.mark.parametrize("top_k", [1, 4])
def test_top_k_keeps_at_most_k_tokens(top_k):
    cfg = CategoricalConfig(vocab_size=30)
    world = CategoricalWorld(cfg, DistillConfig(), SamplingConfig(top_k=top_k), None,
                             StudentConfig())

    @jax.jit
    def fit_and_generate(key):
        k_real, k_generate = jax.random.split(key)
        p = world.fit(None, world.sample_real(k_real, 200), jnp.ones(200), {})
        return p, world.generate(k_generate, p, 10_000, {})

    p, tokens = fit_and_generate(jax.random.key(0))
    assert int((p > 0).sum()) > top_k
    np.testing.assert_array_equal(np.unique(np.asarray(tokens)),
                                  np.sort(np.argsort(-np.asarray(p), kind="stable")[:top_k]))


def test_smoothing_keeps_every_token():
    world = _world(vocab_size=30, smoothing=0.5)
    p = world.fit(None, jnp.zeros(10, jnp.int32), jnp.ones(10), {})
    m = world.measure(None, p)
    assert int(m["support_size"]) == 30 and np.isfinite(m["kl_to_truth"])
    np.testing.assert_allclose(p[0], 10.5 / 25, rtol=1e-6)


@pytest.mark.parametrize("override,key", [
    (dict(distill=DistillConfig(objective=Objective.soft)), "distill.objective"),
    (dict(student=StudentConfig(width=8)), "student.width"),
    (dict(world=CategoricalConfig(smoothing=-1.0)), "world.smoothing"),
    (dict(world=CategoricalConfig(tail_rank=100)), "world.tail_rank"),
])
def test_bad_settings_are_refused_in_one_line(override, key):
    cfg = Config(**{"world": CategoricalConfig(), **override})
    with pytest.raises(ConfigError, match=key) as error:
        experiment.build(cfg)
    assert "\n" not in str(error.value)
