"""The green-list watermark (sim/watermark.py) and its detector: the maths by hand, the
detector's false-positive rate at its nominal level, detection of watermarked teacher
text, radioactivity and cost along a small chain, and refused combinations."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim import experiment, watermark
from sim.config import Config
from sim.distill import DistillConfig, Objective, SamplingConfig, StudentConfig, TrainConfig
from sim.errors import ConfigError
from sim.exposure import Defense, DefenseConfig, ExposureConfig, Regime, validate
from sim.grid import DefenseGrid, GridConfig
from sim.models import transformer as tf
from sim.worlds.digits import DigitsConfig
from sim.worlds.gaussian import GaussianConfig
from sim.worlds.lm import LMParams
from sim.worlds.markov_lm import MarkovLMConfig, MarkovLMWorld, markov_truth, sample_chain

WATERMARK = DefenseConfig(kind=Defense.watermark)


def test_green_lists_are_fixed_by_the_key_with_share_gamma():
    green = np.asarray(watermark.green_lists(0, 0.25, 256))
    assert green.shape == (257, 256) and green.dtype == bool
    assert abs(green.mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / green.size)
    np.testing.assert_array_equal(green, watermark.green_lists(0, 0.25, 256))
    assert (green != np.asarray(watermark.green_lists(1, 0.25, 256))).mean() > 0.3


def test_biased_logits_add_delta_on_the_green_list_of_the_previous_token():
    green_PxV = jnp.array([[True, False, False],   # after token 0
                           [False, True, True],    # after token 1
                           [False, False, True],   # after token 2
                           [True, True, False]])   # after BOS
    tokens_1xL = jnp.array([[2, 0, 1]])
    logits_1xLxV = jnp.zeros((1, 3, 3))
    biased = np.asarray(watermark.biased_logits(logits_1xLxV, tokens_1xL, green_PxV, 2.0))
    np.testing.assert_array_equal(biased[0], [[2, 2, 0], [0, 0, 2], [2, 0, 0]])


def test_the_detector_scores_each_distinct_pair_once():
    green_PxV = jnp.array([[True, False], [False, True], [True, False]])  # rows 0, 1, BOS
    # pairs: (BOS,0) green, (0,0) green, (0,0) again, (0,1) red; (BOS,1) red, (1,1) green
    tokens_NxL = jnp.array([[0, 0, 0, 1], [1, 1, 1, 1]])
    green, total = watermark.green_count(tokens_NxL, green_PxV)
    assert (int(green), int(total)) == (3, 5)
    z, p = watermark.detect(tokens_NxL, green_PxV, 0.5)
    expected = (3 - 0.5 * 5) / np.sqrt(5 * 0.25)
    np.testing.assert_allclose(float(z), expected, rtol=1e-6)
    np.testing.assert_allclose(float(p), 0.5 * (1 - __import__("math").erf(
        expected / np.sqrt(2))), rtol=1e-5)


def test_false_positive_rate_on_unwatermarked_text_is_nominal():
    """Text independent of the key: the share of samples with p < 0.05 is within 3
    standard errors of 0.05. Each trial draws a fresh key and a fresh sample of the
    default size (64 sequences of 32 tokens) from a Markov chain over 32 tokens (the
    markov_lm truth): its frequent pairs repeat, which only a detector that scores each
    distinct pair once keeps at the nominal rate."""
    trials, vocab, gamma = 2000, 32, 0.25
    pi, p = markov_truth(vocab, 1.0, 4, 0.1, 0)
    rng = np.random.default_rng(0)
    tokens_TxNxL = np.stack([sample_chain(rng, pi, p, 64, 32) for _ in range(trials)])
    green_TxPxV = jax.vmap(lambda k: watermark.green_lists(k, gamma, vocab))(
        jnp.arange(trials))
    _, p_T = jax.vmap(lambda t, g: watermark.detect(t, g, gamma))(tokens_TxNxL, green_TxPxV)
    rate = float(np.mean(np.asarray(p_T) < 0.05))
    se = np.sqrt(0.05 * 0.95 / trials)
    assert abs(rate - 0.05) < 3 * se, (rate, se)


SMALL = MarkovLMConfig(n_samples=128, seq_len=16, width=16, layers=1, heads=2,
                       eval_sequences=64)
CHAIN = Config(world=SMALL, train=TrainConfig(steps=40, batch_size=32, lr=1e-2),
               generations=1, seeds=3, progress=False)


@pytest.fixture(scope="module")
def chains():
    """Two generations of hard distillation from the same generation 0 without and with
    the default watermark (gamma 0.25): delta 0 and 2, two points of one grid; only the
    first teacher (generation 0) watermarks (defense.teachers=1)."""
    cfg = dataclasses.replace(CHAIN, defense=dataclasses.replace(WATERMARK, teachers=1),
                              generations=2,
                              grid=GridConfig(defense=DefenseGrid(delta=[0.0, 2.0])))
    built = experiment.build(cfg)
    # 6 lanes in lax.map batches of 4, fitted lane by lane: this once hung in jaxlib 0.10's
    # batched LAPACK calls (sim.lapack), and watermarked worlds fitted the vmapped lanes
    assert built.chain.world.cpu_lane_by_lane
    ds = experiment.run(built)
    return ds.sel({"defense.delta": 0.0}), ds.sel({"defense.delta": 2.0})


def test_watermarked_teacher_text_is_detected_and_the_student_carries_it(chains):
    clean, marked = chains
    first = {"generation": 1}
    assert (marked.teacher_watermark_z.sel(first) > 4).all(), marked.teacher_watermark_z
    assert (np.abs(clean.teacher_watermark_z.sel(first)) < 4).all()
    assert np.isnan(marked.teacher_watermark_z.sel(generation=0)).all()
    # generation 0 is the same model in both chains; its own text carries no watermark
    np.testing.assert_array_equal(clean.watermark_z.sel(generation=0),
                                  marked.watermark_z.sel(generation=0))
    # radioactivity: the student's own (unwatermarked) text scores higher, seed by seed
    gain = marked.watermark_z.sel(first) - clean.watermark_z.sel(first)
    assert (gain > 1).all(), gain.values


def test_the_watermark_costs_the_teacher_and_the_student(chains):
    clean, marked = chains
    first = {"generation": 1}
    assert float(np.max(np.abs(clean.teacher_nll_cost.sel(first)))) < 1e-5
    np.testing.assert_allclose(clean.teacher_nll_real.sel(first),
                               clean.nll_real.sel(generation=0), rtol=1e-5)
    assert (marked.teacher_nll_cost.sel(first) > 0.05).all(), marked.teacher_nll_cost
    assert (marked.kl_to_truth.sel(first) > clean.kl_to_truth.sel(first)).all()


def test_after_the_first_teachers_the_mark_is_no_longer_added(chains):
    _, marked = chains
    second = {"generation": 2}
    np.testing.assert_array_equal(marked.teacher_nll_cost.sel(second), 0.0)
    assert (marked.teacher_watermark_z.sel(second)
            < marked.teacher_watermark_z.sel(generation=1)).all()


def test_logit_noise_costs_the_teacher_what_it_exposes():
    """The served distribution of a (random) teacher with noise on its log-probabilities
    is further from held-out text; without a defense the cost is 0."""
    def cost(defense: DefenseConfig) -> float:
        world = MarkovLMWorld(SMALL, DistillConfig(objective=Objective.soft),
                              SamplingConfig(), TrainConfig(), StudentConfig(),
                              defense=defense)
        teacher = LMParams(tf.init(jax.random.key(0), world.teacher_arch), jnp.float32(0),
                           world.teacher_arch)
        logits, _ = world.forward(teacher.weights, teacher.cfg, world.eval_ExL)
        return float(world.teacher_metrics(jax.random.key(1), teacher, logits,
                                           None)["teacher_nll_cost"])

    assert cost(DefenseConfig()) == 0.0
    assert cost(DefenseConfig(kind=Defense.logit_noise, noise_scale=1.0)) > 0.1


@pytest.mark.parametrize("world,message", [
    (DigitsConfig(), "defense.kind='watermark' is not allowed: none or logit_noise in the "
                     "world 'digits': the watermark marks text"),
    (GaussianConfig(), "defense.kind='watermark' is not allowed: only 'none' in the world "
                       "'gaussian'"),
])
def test_the_watermark_is_refused_where_there_is_no_text(world, message):
    with pytest.raises(ConfigError, match=message):
        experiment.build(Config(world=world, defense=WATERMARK))


def test_the_watermark_marks_text_so_text_only_students_may_face_it():
    validate(ExposureConfig(regime=Regime.text_only), WATERMARK, Objective.hard,
             "markov_lm", distils=True, text=True)
    with pytest.raises(ConfigError, match="defense.kind='logit_noise' is not allowed"):
        validate(ExposureConfig(regime=Regime.text_only),
                 DefenseConfig(kind=Defense.logit_noise), Objective.hard, "markov_lm",
                 distils=True, text=True)


@pytest.mark.parametrize("defense,message", [
    (dataclasses.replace(WATERMARK, gamma=1.0), r"defense.gamma=1.0 is not allowed: a "
                                                r"fraction in \(0, 1\)"),
    (dataclasses.replace(WATERMARK, delta=-1.0), "defense.delta=-1.0 is not allowed"),
])
def test_bad_watermark_settings_are_refused_naming_the_key(defense, message):
    with pytest.raises(ConfigError, match=message):
        experiment.build(Config(world=SMALL, defense=defense))
