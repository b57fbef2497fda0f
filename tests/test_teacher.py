"""Teacher choice: original stops compounding (closed form), an ensemble samples its
members uniformly, refusals."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim import experiment
from sim.config import Config
from sim.errors import ConfigError
from sim.mix import MixConfig, MixPolicy
from sim.teacher import TeacherConfig, TeacherKind, Teachers, Teaching
from sim.worlds.categorical import CategoricalConfig
from sim.worlds.gaussian import GaussianConfig, Estimator
from sim.worlds.markov_lm import MarkovLMConfig

N, D, G = 20, 2, 5
BASE = Config(world=GaussianConfig(dim=D, n_samples=N, estimator=Estimator.unbiased),
              mix=MixConfig(policy=MixPolicy.replace), generations=G, seeds=3000,
              progress=False)


def _run(cfg: Config):
    return experiment.run(experiment.build(cfg))


def test_original_teacher_gives_every_generation_the_same_expected_error():
    """Every generation g >= 1 refits n samples of generation 0's fit:
    E||mu_g - mu||^2 = E||mu_0 - mu||^2 + E tr Sigma_0 / n = 2 tr Sigma / n for every g;
    under the previous teacher it is (g + 1) tr Sigma / n (unbiased estimator)."""
    original = _run(dataclasses.replace(BASE, teacher=TeacherConfig(
        kind=TeacherKind.original))).mean_error.values  # (G + 1, seeds)
    expected = [D / N] + [2 * D / N] * G
    for g in range(G + 1):
        se = original[g].std(ddof=1) / np.sqrt(original.shape[1])
        assert abs(original[g].mean() - expected[g]) < 4 * se, (g, original[g].mean())
    previous = _run(BASE).mean_error.values[G]
    se = previous.std(ddof=1) / np.sqrt(previous.size)
    assert abs(previous.mean() - (G + 1) * D / N) < 4 * se


def test_ensemble_draws_each_sample_from_a_uniform_member():
    from sim.worlds import make_world
    from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
    world = make_world(CategoricalConfig(vocab_size=4, n_samples=4000), DistillConfig(),
                       SamplingConfig(), TrainConfig(), StudentConfig())
    teaching = Teaching(TeacherKind.ensemble, 3)
    members = jnp.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    n = 4000
    for filled in (1, 2, 3):
        tokens = teaching.generate(world, jax.random.key(filled), members[0],
                                   Teachers(members, jnp.int32(filled)), n, {})
        share = np.bincount(np.asarray(tokens), minlength=4) / n
        expected = np.r_[np.full(filled, 1 / filled), np.zeros(4 - filled)]
        tol = 4 * np.sqrt(expected * (1 - expected) / n) + 1e-12
        assert (np.abs(share - expected) <= tol).all(), (filled, share)
    # the mixture's log-likelihood: log of the average member probability
    ll = teaching.log_likelihood(world, members[0], Teachers(members, jnp.int32(2)))
    np.testing.assert_allclose(ll(jnp.array([0, 1, 2])), [np.log(0.5), np.log(0.5), -np.inf])


def test_ensemble_keeps_a_ring_of_the_latest_models():
    teaching = Teaching(TeacherKind.ensemble, 2)
    teachers = teaching.init(jnp.float32(0))
    for g in (1, 2, 3):
        teachers = teaching.update(teachers, jnp.float32(g), jnp.int32(g))
    np.testing.assert_array_equal(teachers.members, [2, 3])  # slot g mod 2
    assert int(teachers.filled) == 2


def test_ensemble_runs_and_is_refused_where_students_query_one_teacher():
    ds = _run(dataclasses.replace(BASE, seeds=4, teacher=TeacherConfig(
        kind=TeacherKind.ensemble, window=3)))
    assert np.isfinite(ds.w2_to_truth.values).all()
    with pytest.raises(ConfigError, match=r"^teacher.kind='ensemble' is not allowed: "
                       r"previous or original in the world 'markov_lm'"):
        experiment.build(Config(world=MarkovLMConfig(), teacher=TeacherConfig(
            kind=TeacherKind.ensemble)))
    with pytest.raises(ConfigError, match=r"^teacher.window=0 is not allowed"):
        experiment.build(dataclasses.replace(BASE, teacher=TeacherConfig(window=0)))
