"""What a teacher exposes (full logits, top-k log-probabilities, text) and the logit-noise
defense: the exposed distributions by hand, the allowed combinations, and their effect
on what a student learns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.distill import DistillConfig, Missing, Objective, SamplingConfig, StudentConfig
from sim.distill import TrainConfig, dynamic_settings
from sim.errors import ConfigError
from sim.exposure import (ALLOWED, Defense, DefenseConfig, ExposureConfig, Regime, expose,
                          validate)
from sim.worlds.digits import DigitsConfig, DigitsWorld

LOGITS = jnp.array([[2.0, 1.0, 0.0, -1.0, -3.0]])
TOP2 = ExposureConfig(regime=Regime.topk_logprobs, top_k=2)


def test_full_logits_are_passed_unchanged():
    assert expose(None, LOGITS, ExposureConfig(), DefenseConfig()) is LOGITS


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_top_k_log_probabilities_renormalised_or_with_a_uniform_rest(temperature):
    p = np.asarray(jax.nn.softmax(LOGITS / temperature))[0]
    cfg = ExposureConfig(regime=Regime.topk_logprobs, top_k=2, temperature=temperature)
    renormalised = np.exp(np.asarray(expose(None, LOGITS, cfg, DefenseConfig()))[0])
    np.testing.assert_allclose(renormalised, np.r_[p[:2] / p[:2].sum(), 0, 0, 0], rtol=1e-5)
    uniform_cfg = ExposureConfig(regime=Regime.topk_logprobs, top_k=2,
                                 temperature=temperature, missing=Missing.uniform)
    uniform = np.exp(np.asarray(expose(None, LOGITS, uniform_cfg, DefenseConfig()))[0])
    rest = (1 - p[:2].sum()) / 3
    np.testing.assert_allclose(uniform, np.r_[p[:2], rest, rest, rest], rtol=1e-5)


def test_noise_perturbs_only_what_is_exposed_and_stays_a_distribution():
    noise = DefenseConfig(kind=Defense.logit_noise, noise_scale=1.0)
    key = jax.random.key(0)
    full = np.exp(np.asarray(expose(key, LOGITS, ExposureConfig(), noise)))
    clean = np.asarray(jax.nn.softmax(LOGITS))
    assert not np.allclose(full, clean) and np.isclose(full.sum(), 1.0, rtol=1e-5)
    top2 = np.exp(np.asarray(expose(key, LOGITS, TOP2, noise)))[0]
    assert np.all(top2[2:] == 0) and np.isclose(top2.sum(), 1.0, rtol=1e-5)
    assert not np.allclose(top2[:2], clean[0, :2] / clean[0, :2].sum())


@pytest.mark.parametrize("regime", list(Regime))
@pytest.mark.parametrize("objective", list(Objective))
def test_each_objective_runs_only_where_it_means_something(regime, objective):
    exposure = ExposureConfig(regime=regime, missing=Missing.uniform)
    if objective in ALLOWED[regime]:
        validate(exposure, DefenseConfig(), objective, "markov_lm", distils=True)
    else:
        with pytest.raises(ConfigError, match=f"with exposure={regime.value}"):
            validate(exposure, DefenseConfig(), objective, "markov_lm", distils=True)


def test_worlds_without_a_teacher_query_refuse_exposure_settings():
    with pytest.raises(ConfigError, match="exposure.regime='topk_logprobs' is not allowed"):
        validate(TOP2, DefenseConfig(), Objective.hard, "gaussian", distils=False)
    with pytest.raises(ConfigError, match="defense.kind='logit_noise' is not allowed"):
        validate(ExposureConfig(), DefenseConfig(kind=Defense.logit_noise, noise_scale=1.0),
                 Objective.soft, "categorical", distils=False)


def test_what_the_teacher_reveals_bounds_what_the_student_learns():
    """Soft digits students of one teacher: the full logits teach the teacher's
    distribution best; the argmax alone (top 1, renormalised) or heavily noised logits
    leave the student further from it (KL(teacher || student) on the test images)."""
    train = TrainConfig(steps=150, batch_size=32, lr=3e-3)
    distill = DistillConfig(objective=Objective.soft, tau=2.0)
    dyn = {k: jnp.float32(v) for k, v in dynamic_settings(distill, SamplingConfig(),
                                                          train).items()}

    def world(exposure=ExposureConfig(), defense=DefenseConfig()):
        return DigitsWorld(DigitsConfig(hidden=(32,)), distill, SamplingConfig(), train,
                           StudentConfig(hidden=(16,)), exposure, defense)

    base = world()
    data = base.sample_real(jax.random.key(0), base.n_samples)
    ones = jnp.ones(base.n_samples)
    teacher = jax.jit(lambda: base.fit(jax.random.key(1), data, ones, dyn, None))()

    def kl_of_student(w):
        student = jax.jit(lambda: w.fit(jax.random.key(2), data, ones, dyn, teacher))()
        return float(w.measure(jax.random.key(3), student, teacher, dyn)["kl_teacher_student"])

    full = kl_of_student(base)
    argmax_only = kl_of_student(world(ExposureConfig(regime=Regime.topk_logprobs, top_k=1)))
    noised = kl_of_student(world(defense=DefenseConfig(kind=Defense.logit_noise,
                                                       noise_scale=3.0)))
    assert argmax_only > 1.5 * full and noised > 1.5 * full, (full, argmax_only, noised)
