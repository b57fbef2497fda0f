"""The LM world's ``measure`` on models whose answers are known exactly.

A transformer whose final LayerNorm has scale 0 and bias e_0 emits the same hidden vector
e_0 at every position, so its logits are row 0 of the head, ``z``, whatever it reads: its
next-token law is softmax(z) everywhere. Every model-side metric then has a closed form
computed here in float64 from z and the world's truth, independent of the code under test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
from sim.models import transformer as tf
from sim.worlds.lm import LMParams
from sim.worlds.markov_lm import MarkovLMConfig, MarkovLMWorld

V = 6
CFG = MarkovLMConfig(n_samples=16, seq_len=7, vocab_size=V, width=8, layers=1, heads=2,
                     eval_sequences=24, trait_trigger=(1,), trait_continuation=(2, 3),
                     trait_rate=0.5)


@pytest.fixture(scope="module")
def world() -> MarkovLMWorld:
    return MarkovLMWorld(CFG, DistillConfig(), SamplingConfig(), TrainConfig(),
                         StudentConfig())


def constant_model(world: MarkovLMWorld, z_V: np.ndarray) -> LMParams:
    """A model whose next-token logits are ``z_V`` at every position (BOS logit -30)."""
    arch = world.teacher_arch
    weights = jax.tree.map(jnp.zeros_like, tf.init(jax.random.key(0), arch))
    weights["ln_final"]["bias"] = weights["ln_final"]["bias"].at[0].set(1.0)
    weights["head"]["kernel"] = weights["head"]["kernel"].at[0].set(
        jnp.asarray(np.append(z_V, -30.0), jnp.float32))
    return LMParams(weights, jnp.float32(0), arch)


def log_softmax(z_V: np.ndarray) -> np.ndarray:
    z_V = np.asarray(z_V, np.float64)
    return z_V - np.log(np.exp(z_V - z_V.max()).sum()) - z_V.max()


def test_measure_of_constant_models_matches_closed_forms(world):
    z_student = np.array([1.5, -0.5, 0.0, 2.0, -1.0, 0.3])
    z_teacher = np.array([0.0, 1.0, -2.0, 0.5, 0.5, 1.2])
    student, teacher = constant_model(world, z_student), constant_model(world, z_teacher)
    metrics = jax.jit(world.measure)(jax.random.key(1), student, teacher, None)

    logq_V, logt_V = log_softmax(z_student), log_softmax(z_teacher)
    q_V, t_V = np.exp(logq_V), np.exp(logt_V)
    truth_ExLxV = np.exp(np.asarray(world.true_logp_ExLxV, np.float64))
    eval_ExL = np.asarray(world.eval_ExL)
    entropy = -(q_V * logq_V).sum()
    expected = {
        "nll_real": -logq_V[eval_ExL].mean(),
        "model_entropy": entropy,
        "entropy_rate": entropy,  # sampled at temperature 1 from softmax(z)
        "kl_to_truth": np.mean((truth_ExLxV * (np.log(np.where(truth_ExLxV > 0, truth_ExLxV,
                                                                1.0)) - logq_V)).sum(-1)),
        "kl_teacher_student": (t_V * (logt_V - logq_V)).sum(),  # KL(teacher || student)
        "agreement": float(np.argmax(z_student) == np.argmax(z_teacher)),
        "tail_mass": q_V[world.order_V[world.tail_rank:]].sum(),
        "trait_probability": q_V[2] * q_V[3],  # the continuation (2, 3), token by token
    }
    for name, value in expected.items():
        np.testing.assert_allclose(float(metrics[name]), value, rtol=2e-5, atol=1e-6,
                                   err_msg=name)
    np.testing.assert_allclose(float(metrics["perplexity_real"]),
                               np.exp(expected["nll_real"]), rtol=2e-5)

