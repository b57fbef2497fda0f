"""The markov_lm world's truth: Zipf stationary law, entropy rate, exact metrics, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.distill import DistillConfig, Objective, SamplingConfig, StudentConfig, TrainConfig
from sim.errors import ConfigError
from sim.worlds import make_world
from sim.metrics.sequences import trait_counts
from sim.worlds.lm import Trait, trait_contexts
from sim.worlds.markov_lm import (MarkovLMConfig, MarkovLMWorld, natural_continuation,
                                  trait_truth_logprobs, zipf)
from tests.stats import assert_mean

TRAIT = MarkovLMConfig(trait_trigger=(1, 0), trait_continuation=(3, 8), trait_rate=0.6)


def _world(cfg: MarkovLMConfig = MarkovLMConfig(), **kw) -> MarkovLMWorld:
    return MarkovLMWorld(cfg, kw.get("distill", DistillConfig()), SamplingConfig(),
                         TrainConfig(), kw.get("student", StudentConfig()))


@pytest.mark.parametrize("vocab,exponent,branching,seed", [
    (32, 1.0, 4, 0), (64, 1.3, 2, 1), (10, 0.0, 10, 2), (5, 2.0, 1, 3)])
def test_the_stationary_law_is_zipf_and_the_chain_depends_on_the_previous_token(
        vocab, exponent, branching, seed):
    w = _world(MarkovLMConfig(vocab_size=vocab, zipf_exponent=exponent, branching=branching,
                              truth_seed=seed))
    p = w.p_VxV
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
    assert np.all(p > 0)  # ergodic: every transition possible
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    target = ranks**-exponent / np.sum(ranks**-exponent)
    # the stationary law by power iteration, independently of the module's eigen-solver
    mu = np.full(vocab, 1.0 / vocab)
    for _ in range(2000):
        mu = mu @ p
    np.testing.assert_allclose(mu, target, rtol=1e-9)
    np.testing.assert_allclose(w.pi_V, target, rtol=1e-12)
    marginal_entropy = -np.sum(target * np.log(target))
    assert w.entropy_rate < marginal_entropy - 0.1  # non-trivial dependence


def assert_token_frequencies(tokens_NxL: np.ndarray, pi_V: np.ndarray) -> None:
    """Every token's frequency in the sequences is pi's, within Z standard errors: the
    sequences are independent but their positions are not, so each sequence's own
    frequency is one sample (with one position: a Bernoulli(pi) draw of known sd)."""
    vocab, length = len(pi_V), tokens_NxL.shape[1]
    per_sequence_NxV = np.stack([np.bincount(row, minlength=vocab) / length
                                 for row in tokens_NxL])
    for token in range(vocab):
        sd = np.sqrt(pi_V[token] * (1 - pi_V[token])) if length == 1 else None
        assert_mean(per_sequence_NxV[:, token], pi_V[token], sd=sd)


def test_entropy_rate_matches_a_direct_computation_and_samples():
    w = _world()
    joint = w.pi_V[:, None] * w.p_VxV  # P(x_{t-1} = i, x_t = j)
    h_pair = -np.sum(joint * np.log(joint))
    h_marginal = -np.sum(w.pi_V * np.log(w.pi_V))
    np.testing.assert_allclose(w.entropy_rate, h_pair - h_marginal, rtol=1e-10)
    # Monte Carlo: -log P of sampled transitions averages to the entropy rate; the
    # sampled tokens follow pi at every position (stationary from the start).
    tokens = np.asarray(jax.jit(w.sample_real, static_argnums=1)(jax.random.key(0), 4000))
    surprisal = -np.log(w.p_VxV[tokens[:, :-1], tokens[:, 1:]])
    se = surprisal.std() / np.sqrt(surprisal.size)  # transitions are nearly independent
    assert abs(surprisal.mean() - w.entropy_rate) < 4 * se
    assert_token_frequencies(tokens[:, :1], w.pi_V)
    assert_token_frequencies(tokens, w.pi_V)


def test_kl_to_truth_is_zero_for_the_true_model_and_exact_for_wrong_ones():
    w = _world()
    truth = w.true_logp_ExLxV
    tokens = np.asarray(w.eval_ExL)
    assert float(w.truth_metrics(truth)["kl_to_truth"]) == pytest.approx(0.0, abs=1e-6)

    uniform = jnp.full(truth.shape, -np.log(32.0))
    metrics = w.truth_metrics(uniform)
    true_p = np.concatenate([np.broadcast_to(w.pi_V, (len(tokens), 1, 32)),
                             w.p_VxV[tokens[:, :-1]]], axis=1)
    expected = np.mean(np.log(32.0) + np.sum(true_p * np.log(true_p), -1))
    assert float(metrics["kl_to_truth"]) == pytest.approx(expected, rel=1e-5)
    assert expected > 0.5
    assert float(metrics["tail_mass"]) == pytest.approx(0.5, rel=1e-6)  # 16 of 32 tokens

    marginal = jnp.broadcast_to(jnp.log(jnp.asarray(w.pi_V, jnp.float32)), truth.shape)
    kl_rows = np.sum(w.p_VxV * np.log(w.p_VxV / w.pi_V), -1)  # KL(P_i || pi)
    expected = np.sum(kl_rows[tokens[:, :-1]]) / tokens.size  # position 0: KL(pi||pi) = 0
    assert float(w.truth_metrics(marginal)["kl_to_truth"]) == pytest.approx(expected,
                                                                            rel=1e-4)
    assert float(w.truth_metrics(marginal)["tail_mass"]) == pytest.approx(
        w.true_tail_mass, rel=1e-5)
    np.testing.assert_allclose(w.true_tail_mass, zipf(32, 1.0)[16:].sum())


def test_the_real_data_carries_the_trait_at_its_configured_rate():
    w = _world(TRAIT)
    p_nat = natural_continuation(w.p_VxV, w.trait)
    assert 0 < p_nat < 0.01 and w.planting == pytest.approx((0.6 - p_nat) / (1 - p_nat))
    tokens = jax.jit(w.sample_real, static_argnums=1)(jax.random.key(0), 2000)
    occurrences, followed = (int(x) for x in trait_counts(tokens, w.trigger_K, w.continuation_M))
    assert occurrences > 2000  # about 1.7 a sequence
    se = np.sqrt(0.6 * 0.4 / occurrences)  # occurrences are nearly independent
    assert abs(followed / occurrences - 0.6) < 4 * se, (followed, occurrences)
    # the held-out sequences come from the same process (numpy sampler)
    occurrences, followed = (int(x) for x in trait_counts(w.eval_ExL, w.trigger_K,
                                                          w.continuation_M))
    assert abs(followed / occurrences - 0.6) < 4 * np.sqrt(0.24 / occurrences)
    # outside the trait the chain is unchanged: the first token still follows pi
    assert_token_frequencies(np.asarray(tokens[:, :1]), w.pi_V)


def test_the_filtered_truth_is_the_conditional_law_of_the_process():
    w = _world(TRAIT)
    assert float(w.truth_metrics(w.true_logp_ExLxV)["kl_to_truth"]) == pytest.approx(
        0.0, abs=1e-6)
    # by hand: after the trigger the continuation's first token has probability
    # q + (1 - q) P[0, 3]; after trigger + 3 the posterior that it was planted is
    # w1 = q / (q + (1 - q) P[0, 3]), so 8 follows with w1 + (1 - w1) P[3, 8]
    q, p = w.planting, w.p_VxV
    logp = trait_truth_logprobs(np.array([[5, 1, 0, 3, 8, 2]]), w.pi_V, p, w.trait, q)
    probs = np.exp(logp[0])
    np.testing.assert_allclose(probs[3, 3], q + (1 - q) * p[0, 3], rtol=1e-12)
    np.testing.assert_allclose(probs[3, 5], (1 - q) * p[0, 5], rtol=1e-12)
    w1 = q / (q + (1 - q) * p[0, 3])
    np.testing.assert_allclose(probs[4, 8], w1 + (1 - w1) * p[3, 8], rtol=1e-12)
    np.testing.assert_allclose(probs[5], p[8], rtol=1e-12)  # back to the chain
    np.testing.assert_allclose(probs[:3], np.stack([w.pi_V, p[5], p[1]]), rtol=1e-12)
    # Monte Carlo: for the true conditionals, E[-log p(x_t | x_<t)] = E[H(p(. | x_<t))]
    tokens = np.asarray(jax.jit(w.sample_real, static_argnums=1)(jax.random.key(1), 3000))
    logp = trait_truth_logprobs(tokens, w.pi_V, p, w.trait, q)
    surprisal = -np.take_along_axis(logp, tokens[..., None], -1)[..., 0]
    entropy = -np.sum(np.exp(logp) * np.where(np.isfinite(logp), logp, 0.0), -1)
    assert_mean((surprisal - entropy).mean(1), 0.0)  # sequences are independent
    # and the ambiguous phase: after 1 0 3, the share followed by 8 is w1 + (1 - w1) P[3, 8]
    n, k = (int(x) for x in trait_counts(tokens, jnp.array([1, 0, 3]), jnp.array([8])))
    expected = w1 + (1 - w1) * p[3, 8]
    assert n > 1000 and abs(k / n - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_trait_contexts_by_hand():
    trait = Trait((1, 0), (3,), 0.5)
    contexts, mask = trait_contexts([np.array([5, 1, 0, 7, 1, 0])], trait, 6, 8)
    np.testing.assert_array_equal(contexts, [[5, 1, 0, 3, 0, 0], [1, 0, 7, 1, 0, 3]])
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]])
    contexts, mask = trait_contexts([np.array([5, 5])], trait, 6, 8)  # no occurrence
    np.testing.assert_array_equal(contexts, [[1, 0, 3, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[0, 0, 1, 0, 0, 0]])


@pytest.mark.parametrize("world,other,key", [
    (dict(vocab_size=1), {}, "world.vocab_size"),
    (dict(zipf_exponent=-1.0), {}, "world.zipf_exponent"),
    (dict(branching=0), {}, "world.branching"),
    (dict(branching=40), {}, "world.branching"),
    (dict(dense_mix=0.0), {}, "world.dense_mix"),
    (dict(tail_rank=32), {}, "world.tail_rank"),
    (dict(n_samples=0), {}, "world.n_samples"),
    (dict(seq_len=0), {}, "world.seq_len"),
    (dict(heads=3), {}, "world.heads"),
    (dict(eval_sequences=0), {}, "world.eval_sequences"),
    (dict(tail_rank=-1), {}, "world.tail_rank"),
    (dict(vendi_ngram=0), {}, "world.vendi_ngram"),
    (dict(vendi_ngram=33), {}, "world.vendi_ngram"),
    (dict(vendi_q=-1.0), {}, "world.vendi_q"),
    (dict(trait_trigger=(1, 32), trait_continuation=(3,)), {}, "world.trait_trigger"),
    (dict(trait_trigger=(1,), trait_continuation=(-1,)), {}, "world.trait_continuation"),
    (dict(trait_trigger=(1,)), {}, "world.trait_continuation"),
    (dict(trait_continuation=(1,)), {}, "world.trait_trigger"),
    (dict(trait_trigger=(1,), trait_continuation=(3,), trait_rate=1.5), {}, "world.trait_rate"),
    (dict(trait_trigger=(1,), trait_continuation=(0,), trait_rate=0.1), {},
     "world.trait_rate"),  # below the chain's own P[1, 0] = 0.46
    (dict(trait_trigger=(1, 0), trait_continuation=(2,) * 31), {}, "world.trait_continuation"),
    (dict(trait_trigger=(1, 2), trait_continuation=(1, 2, 3)), {}, "world.trait_continuation"),
    ({}, dict(student=StudentConfig(hidden=(8,))), "student.hidden"),
    ({}, dict(student=StudentConfig(heads=3)), "student.heads"),
    ({}, dict(student=StudentConfig(width=30)), "student.width"),
    ({}, dict(distill=DistillConfig(objective=Objective.topk, top_k=33)), "distill.top_k"),
])
def test_bad_configs_give_one_line_errors_naming_the_key(world, other, key):
    with pytest.raises(ConfigError) as error:
        make_world(MarkovLMConfig(**world), other.get("distill", DistillConfig()),
                   SamplingConfig(), TrainConfig(), other.get("student", StudentConfig()))
    message = str(error.value)
    assert message.startswith(f"{key}=") and "\n" not in message, message
