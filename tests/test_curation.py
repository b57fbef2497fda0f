"""Curation filters: hand cases, and chains against closed forms (tolerances: 4 standard
errors of the sampling distribution)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from sim import experiment
from sim.config import Config
from sim.curation import Curation, Filter, FilterConfig, distinct_rows, top_rows
from sim.errors import ConfigError
from sim.mix import Mix, MixConfig, MixPolicy
from sim.worlds.categorical import CategoricalConfig
from sim.worlds.digits import DigitsConfig
from sim.worlds.gaussian import GaussianConfig
from sim.worlds.linreg import LinregConfig


def _run(cfg: Config):
    return experiment.run(experiment.build(cfg))


def test_top_rows_keeps_the_highest_scores_ties_by_row_order():
    w = top_rows(jnp.array([0.3, 2.0, -1.0, 2.0, 0.5]), jnp.asarray(3.0))
    np.testing.assert_array_equal(w, [0, 1, 0, 1, 1])
    w = top_rows(jnp.zeros(4), jnp.asarray(2.0))  # all tied: the first two
    np.testing.assert_array_equal(w, [1, 1, 0, 0])


def test_distinct_rows_keeps_the_first_of_every_set_of_equal_rows():
    np.testing.assert_array_equal(distinct_rows(jnp.array([3, 1, 3, 2, 1, 3])),
                                  [1, 1, 0, 1, 0, 0])
    data = {"a": jnp.array([[0, 1], [0, 1], [1, 0], [0, 1]]), "b": jnp.array([5., 6., 5., 5.])}
    # rows equal in every leaf: 0 and 3 only
    np.testing.assert_array_equal(distinct_rows(data), [1, 1, 1, 0])


def _selection_factor(n: int, k: int, d: int) -> float:
    """E[tr Sigma_g / tr Sigma_{g-1}] when the k of n samples nearest the teacher's mean (in
    its Mahalanobis distance) are kept and refitted with the unbiased estimator. Given the
    (k+1)-th smallest squared distance c, the k kept are iid from N(0, I) truncated to
    ||z||^2 < c, whose covariance is F_{d+2}(c) / F_d(c) I (chi-square CDFs); F_d(c) is the
    (k+1)-th order statistic of n uniforms, u ~ Beta(k + 1, n - k)."""
    def factor(u):
        return stats.chi2.cdf(stats.chi2.ppf(u, d), d + 2) / u
    return integrate.quad(lambda u: factor(u) * stats.beta.pdf(u, k + 1, n - k), 0, 1)[0]


SELF = Config(world=GaussianConfig(dim=2, n_samples=200),
              filter=FilterConfig(kind=Filter.self_likelihood, keep=0.5),
              generations=3, seeds=400, progress=False)


def test_self_likelihood_shrinks_the_gaussian_by_the_truncated_chi_factor():
    ds = _run(SELF)
    trace = ds.cov_trace_ratio.values  # (G + 1, seeds)
    ratio_S = (trace[1:] / trace[:-1]).mean(0)  # per lane, the mean of the G factors
    expected = _selection_factor(200, 100, 2)  # 0.3093 (0.3069 at the exact quantile)
    se = ratio_S.std(ddof=1) / np.sqrt(ratio_S.size)
    assert abs(ratio_S.mean() - expected) < 4 * se, (ratio_S.mean(), expected, se)
    assert (ds.kept_fraction.values[1:] == 0.5).all()
    assert np.isnan(ds.kept_fraction.values[0]).all()
    precision = ds.verifier_precision.values[1:]
    assert ((precision >= 0) & (precision <= 1)).all()


class _DataOnly:
    """A world without sufficient statistics: the chain goes through weighted data."""

    def __init__(self, world):
        self._world = world

    def __getattr__(self, name):
        if name in ("statistics", "fit_statistics", "sample_statistics"):
            raise AttributeError(name)
        return getattr(self._world, name)


def test_filtered_statistics_path_equals_the_weighted_data_path():
    """Under accumulate a filtered chain sums weighted statistics; under replace it fits
    the weighted rows (never the Gaussian's direct draw of its own fit)."""
    replace = experiment.build(dataclasses.replace(SELF, mix=MixConfig(
        policy=MixPolicy.replace))).chain
    assert not replace.summarises
    cfg = dataclasses.replace(SELF, mix=MixConfig(policy=MixPolicy.accumulate), seeds=4,
                              generations=4)
    built = experiment.build(cfg)
    chain = built.chain
    assert chain.summarises
    data_chain = chain._replace(world=_DataOnly(chain.world))
    assert not data_chain.summarises
    fast = experiment.run(built)
    slow = experiment.run(built._replace(chain=data_chain))
    for name in ("cov_trace_ratio", "mean_error", "kept_fraction"):
        np.testing.assert_allclose(slow[name], fast[name], rtol=2e-4, atol=1e-6, err_msg=name)


def test_a_perfect_verifier_has_precision_one_and_a_noisy_one_keeps_at_random():
    n, keep = 100, 0.5
    base = Config(world=GaussianConfig(dim=2, n_samples=n), generations=2, seeds=300,
                  filter=FilterConfig(kind=Filter.truth_likelihood, keep=keep, noise=0.0),
                  progress=False)
    perfect = _run(base)
    np.testing.assert_array_equal(perfect.verifier_precision.values[1:], 1.0)
    noisy = _run(dataclasses.replace(base, filter=FilterConfig(
        kind=Filter.truth_likelihood, keep=keep, noise=1e6)))
    # kept at random: the overlap with the true top k is hypergeometric(n, k, k)
    k = round(keep * n)
    precision = noisy.verifier_precision.values[1:].ravel()
    var = k * (k / n) * ((n - k) / n) * ((n - k) / (n - 1)) / k**2
    assert abs(precision.mean() - k / n) < 4 * np.sqrt(var / precision.size)


def test_dedup_leaves_a_categorical_uniform_on_its_distinct_tokens():
    n = 300
    ds = _run(Config(world=CategoricalConfig(n_samples=n, vocab_size=50),
                     filter=FilterConfig(kind=Filter.dedup), generations=3, seeds=8,
                     progress=False))
    kept = np.round(ds.kept_fraction.values[1:] * n)  # distinct tokens of the teacher's n samples
    support = ds.support_size.values[1:]
    np.testing.assert_array_equal(kept, support)
    p = ds.token_probability.values[1:]  # (G, seeds, V): 1 / support on the support
    np.testing.assert_allclose(np.where(p > 0, p * support[..., None], 1.0), 1.0, rtol=1e-5)


def test_truth_likelihood_keeps_linreg_near_the_truth():
    """The verifier keeps the labels nearest the true line: the weight error stays far
    below the random walk of plain refitting, (g + 1) sigma^2 tr (X'X)^-1."""
    base = Config(world=LinregConfig(n_samples=100, dim=5), generations=10, seeds=64,
                  progress=False)
    plain = _run(base).weight_error.values[-1].mean()
    kept = _run(dataclasses.replace(base, filter=FilterConfig(
        kind=Filter.truth_likelihood, keep=0.5))).weight_error.values[-1].mean()
    assert kept < plain / 4, (kept, plain)


def test_filters_a_world_cannot_score_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^filter.kind='truth_likelihood' is not allowed: "
                       r"one of none, dedup in the world 'digits'"):
        experiment.build(Config(world=DigitsConfig(), filter=FilterConfig(
            kind=Filter.truth_likelihood)))
    with pytest.raises(ConfigError, match=r"^filter.keep=0.01 is not allowed: a fraction "
                       r"that keeps at least 3"):
        experiment.build(Config(world=GaussianConfig(dim=2, n_samples=100),
                                filter=FilterConfig(kind=Filter.self_likelihood, keep=0.01)))
    with pytest.raises(ConfigError, match=r"^filter.keep=1.5 is not allowed"):
        experiment.build(Config(world=GaussianConfig(), filter=FilterConfig(
            kind=Filter.self_likelihood, keep=1.5)))


def test_weighted_pools_carry_the_filters_weights():
    n, g = 4, 3
    real = jnp.zeros(n)
    w_N = jnp.array([1.0, 0.0, 1.0, 0.0])
    acc = Mix(MixPolicy.accumulate, n, g, n, weighted=True)
    state = acc.init(real)
    state, pool, w_P = acc(state, jax.random.key(0), jnp.asarray(1), None, jnp.ones(n), {}, w_N)
    np.testing.assert_array_equal(w_P, [1, 1, 1, 1, 1, 0, 1, 0] + [0] * 8)
    fresh = Mix(MixPolicy.fresh, n, g, n)
    dyn = {"mix.real_fraction": jnp.float32(0.5)}
    synthetic = jnp.arange(1.0, n + 1)  # rows 1 and 3 kept
    _, data, w = fresh((), jax.random.key(0), jnp.asarray(1), real, synthetic, dyn, w_N)
    # two real slots, then the two kept synthetic rows (none lost to the real slots)
    np.testing.assert_array_equal(data, [0, 0, 1, 3])
    np.testing.assert_array_equal(w, [1, 1, 1, 1])


def test_filter_settings_sweep_as_lanes_only_where_the_filter_reads_them():
    from sim.grid import FilterGrid, GridConfig
    base = Config(world=GaussianConfig(dim=2, n_samples=40), generations=2, seeds=3,
                  filter=FilterConfig(kind=Filter.truth_likelihood), progress=False)
    swept = _run(dataclasses.replace(base, grid=GridConfig(filter=FilterGrid(
        noise=[0.0, 100.0], keep=[0.5, 0.75]))))
    assert swept.kept_fraction.dims == ("generation", "seed", "filter.keep", "filter.noise")
    np.testing.assert_array_equal(swept.kept_fraction.isel(generation=1, seed=0),
                                  [[0.5, 0.5], [0.75, 0.75]])
    precision = swept.verifier_precision.isel(generation=slice(1, None))
    assert (precision.sel({"filter.noise": 0.0}) == 1).all()
    alone = _run(dataclasses.replace(base, filter=FilterConfig(
        kind=Filter.truth_likelihood, keep=0.75, noise=100.0)))
    np.testing.assert_allclose(swept.w2_to_truth.sel({"filter.keep": 0.75, "filter.noise": 100.0}),
                               alone.w2_to_truth, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"^grid.filter.noise=\[0.0, 1.0\] is not allowed: "
                       r"only with filter=truth_likelihood \(this run has "
                       r"filter=self_likelihood\)"):
        experiment.build(dataclasses.replace(base, filter=FilterConfig(
            kind=Filter.self_likelihood), grid=GridConfig(filter=FilterGrid(noise=[0, 1]))))


def test_markov_lm_scores_a_sequence_by_its_true_chain():
    from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
    from sim.worlds.markov_lm import MarkovLMConfig, MarkovLMWorld
    world = MarkovLMWorld(MarkovLMConfig(vocab_size=8, seq_len=4, eval_sequences=4),
                          DistillConfig(), SamplingConfig(), TrainConfig(), StudentConfig())
    tokens = np.array([[0, 3, 3, 1], [7, 2, 0, 0]])
    expected = [np.log(world.pi_V[s[0]]) + sum(np.log(world.p_VxV[a, b])
                                               for a, b in zip(s[:-1], s[1:]))
                for s in tokens]
    np.testing.assert_allclose(world.truth_log_likelihood(jnp.asarray(tokens)), expected,
                               rtol=1e-5)


def test_an_lm_scores_a_sequence_by_its_own_next_token_distributions():
    """self_likelihood in the LM worlds: log q(x) = sum_t log q(x_t | x_<t) is the log of a
    distribution over the V^L sequences (it sums to 1) and is what the sampler drew each
    token from."""
    import itertools

    from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
    from sim.models import transformer as tf
    from sim.worlds.lm import LMParams, sample_sequences
    from sim.worlds.markov_lm import MarkovLMConfig, MarkovLMWorld
    v, length = 3, 4
    world = MarkovLMWorld(MarkovLMConfig(vocab_size=v, branching=2, seq_len=length,
                                         eval_sequences=4, width=16, layers=1, heads=2),
                          DistillConfig(), SamplingConfig(), TrainConfig(), StudentConfig())
    arch = world.teacher_arch
    weights = jax.tree.map(lambda w: 4.0 * w, tf.init(jax.random.key(0), arch))  # peaked
    model = LMParams(weights, jnp.float32(0), arch)
    every_SxL = jnp.asarray(list(itertools.product(range(v), repeat=length)), jnp.int32)
    logq_S = np.asarray(world.log_likelihood(model, every_SxL), np.float64)
    assert np.ptp(logq_S) > 2.0  # far from uniform, so a shifted position would show
    np.testing.assert_allclose(np.exp(logq_S).sum(), 1.0, rtol=1e-4)
    tokens_NxL, logits_NxLxV = sample_sequences(jax.random.key(1), weights, arch, 8, length,
                                                v, return_logits=True)
    drawn_N = jnp.take_along_axis(jax.nn.log_softmax(logits_NxLxV), tokens_NxL[..., None],
                                  -1)[..., 0].sum(-1)
    np.testing.assert_allclose(world.log_likelihood(model, tokens_NxL), drawn_N, rtol=1e-4,
                               atol=1e-4)


def test_world_scores_are_the_log_densities():
    from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
    from sim.worlds import make_world
    from sim.worlds.gaussian import Covariance, GaussianParams, true_covariance
    from sim.worlds.gmm import GmmConfig

    def build(cfg):
        return make_world(cfg, DistillConfig(), SamplingConfig(), TrainConfig(),
                          StudentConfig())

    cfg = GaussianConfig(dim=3, covariance=Covariance.random)
    gaussian = build(cfg)
    x = np.asarray(gaussian.sample_real(jax.random.key(0), 5))
    np.testing.assert_allclose(gaussian.truth_log_likelihood(jnp.asarray(x)),
                               stats.multivariate_normal(np.zeros(3), true_covariance(cfg))
                               .logpdf(x), rtol=1e-4)
    chol = np.array([[2.0, 0, 0], [0.5, 1.0, 0], [0.1, -0.3, 0.5]])
    model = GaussianParams(jnp.ones(3), jnp.asarray(chol, jnp.float32))
    np.testing.assert_allclose(gaussian.log_likelihood(model, jnp.asarray(x)),
                               stats.multivariate_normal(np.ones(3), chol @ chol.T).logpdf(x),
                               rtol=1e-4)
    linreg = build(LinregConfig(n_samples=20, dim=3, noise=0.5))
    data = linreg.sample_real(jax.random.key(1), 20)
    mean = np.asarray(linreg.x_TxD) @ np.asarray(linreg.w_D)
    np.testing.assert_allclose(linreg.truth_log_likelihood(data),
                               stats.norm(mean, 0.5).logpdf(np.asarray(data["y"])), rtol=1e-4)
    gmm = build(GmmConfig(dim=2, components=2, n_test=10, fidelity_points=8))
    x = gmm.sample_real(jax.random.key(2), 6)
    pi, means = gmm.true_weights_K, gmm.true_means_KxD
    expected = np.log(sum(p * stats.multivariate_normal(m, np.eye(2)).pdf(np.asarray(x))
                          for p, m in zip(pi, means)))
    np.testing.assert_allclose(gmm.truth_log_likelihood(x), expected, rtol=1e-4)
    np.testing.assert_allclose(gmm.log_likelihood(gmm.truth, x), expected, rtol=1e-4)


class _Scored:
    """A world stub whose rows' true log-likelihood is the row itself."""

    def truth_log_likelihood(self, x_N):
        return x_N


def test_filters_keep_only_among_the_rows_a_synthetic_count_schedule_leaves():
    x_N = jnp.array([1.0, 5.0, 1.0, 3.0, 9.0, 9.0])  # rows 4 and 5: beyond n_g = 4
    valid_N = jnp.array([1.0, 1, 1, 1, 0, 0])
    dyn = {"filter.keep": jnp.float32(0.5), "filter.noise": jnp.float32(0.0)}
    verifier = Curation(FilterConfig(kind=Filter.truth_likelihood), _Scored())
    w, metrics = verifier(jax.random.key(0), x_N, dyn, None, valid_N)
    np.testing.assert_array_equal(w, [0, 1, 0, 1, 0, 0])  # the top round(0.5 x 4) = 2 of 4
    assert float(metrics["kept_fraction"]) == 0.5 and float(metrics["verifier_precision"]) == 1
    teacher = Curation(FilterConfig(kind=Filter.self_likelihood, keep=0.25), _Scored())
    w, _ = teacher(jax.random.key(0), x_N, {**dyn, "filter.keep": jnp.float32(0.25)},
                   lambda x: -x, valid_N)
    np.testing.assert_array_equal(w, [1, 0, 0, 0, 0, 0])  # the teacher's likeliest valid row
    dedup = Curation(FilterConfig(kind=Filter.dedup), _Scored())
    w, metrics = dedup(jax.random.key(0), x_N, dyn, None, valid_N)
    np.testing.assert_array_equal(w, [1, 1, 0, 1, 0, 0])
    assert float(metrics["kept_fraction"]) == 0.75  # 3 distinct of the 4 rows


def test_markov_lm_keeps_its_teachers_likeliest_sequences():
    """filter=self_likelihood is accepted in the LM worlds and keeps the round(keep n)
    sequences the teacher finds likeliest (its produce step, without training)."""
    from sim.chain import ChainState
    from sim.models import transformer as tf
    from sim.worlds.lm import LMParams
    from sim.worlds.markov_lm import MarkovLMConfig
    cfg = Config(world=MarkovLMConfig(n_samples=16, seq_len=8, eval_sequences=8, layers=1,
                                      width=16, heads=2),
                 filter=FilterConfig(kind=Filter.self_likelihood, keep=0.25),
                 generations=1, seeds=1, progress=False)
    built = experiment.build(cfg)
    chain, world = built.chain, built.chain.world
    arch = world.teacher_arch
    teacher = LMParams(jax.tree.map(lambda w: 4.0 * w, tf.init(jax.random.key(0), arch)),
                       jnp.float32(0), arch)
    dyn = {k: jnp.float32(v) for k, v in built.dyn.items()}
    tokens, w_N, metrics = chain._synthetic(jax.random.key(1), ChainState(teacher, ()),
                                          jnp.asarray(1), dyn)
    logq_N = np.asarray(world.log_likelihood(teacher, tokens))
    kept = np.asarray(w_N) > 0
    assert kept.sum() == 4 and float(metrics["kept_fraction"]) == 0.25
    assert logq_N[kept].min() >= logq_N[~kept].max()
    assert 0.0 <= float(metrics["verifier_precision"]) <= 1.0  # the truth is known
    # scoring the 16 sequences is one teacher-forced forward pass each, beside sampling them
    assert float(chain.sample_flops(teacher, 1)) == pytest.approx(
        16 * (tf.decode_flops(arch, 8) + 8 * tf.flops_per_token(arch)), rel=1e-6)
