"""The shared LM machinery (sim/worlds/lm.py), exercised through a tiny markov_lm world:
every distillation objective trains a student towards its teacher; smaller students;
sampling; FLOP accounting; the chain end to end."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim import experiment, objectives
from sim.config import Config
from sim.distill import (DistillConfig, Missing, Objective, SamplingConfig, StudentConfig,
                         TrainConfig, dynamic_settings)
from sim.mix import MixConfig
from sim.models import transformer as tf
from sim.train import train
from sim.worlds.lm import LMParams, sample_sequences
from sim.worlds.markov_lm import MarkovLMConfig, MarkovLMWorld

TINY = MarkovLMConfig(n_samples=128, seq_len=8, vocab_size=8, width=16, layers=1, heads=2,
                      eval_sequences=32)
TRAIN = TrainConfig(steps=60, batch_size=16, lr=1e-2)


def _world(distill: DistillConfig = DistillConfig(), student: StudentConfig = StudentConfig(),
           train_cfg: TrainConfig = TRAIN, cfg: MarkovLMConfig = TINY) -> MarkovLMWorld:
    return MarkovLMWorld(cfg, distill, SamplingConfig(), train_cfg, student)


def _dyn(distill: DistillConfig = DistillConfig(), train_cfg: TrainConfig = TRAIN) -> dict:
    return {k: jnp.float32(v) for k, v in
            dynamic_settings(distill, SamplingConfig(), train_cfg).items()}


def _kl_teacher_student(world: MarkovLMWorld, teacher: LMParams, weights, arch,
                        target_log_probs=None) -> float:
    """Mean KL(teacher || student) over the held-out real positions (or KL(target ||
    student) for given target log-probabilities at those positions)."""
    if target_log_probs is None:
        t_logits, _ = world.forward(teacher.weights, teacher.cfg, world.eval_ExL)
        target_log_probs = jax.nn.log_softmax(t_logits)
    s_logits, _ = world.forward(weights, arch, world.eval_ExL)
    return float(jnp.mean(objectives.kl(target_log_probs, jax.nn.log_softmax(s_logits))))


def _renormalised_topk(world: MarkovLMWorld, teacher: LMParams) -> jax.Array:
    """The teacher's top-k probabilities renormalised (numpy), as log-probabilities at the
    held-out real positions."""
    t_logits, _ = world.forward(teacher.weights, teacher.cfg, world.eval_ExL)
    p = np.asarray(jax.nn.softmax(t_logits), np.float64)
    kth = -np.sort(-p, axis=-1)[..., world.distill.top_k - 1:world.distill.top_k]
    kept = np.where(p >= kth, p, 0.0)
    with np.errstate(divide="ignore"):
        return jnp.asarray(np.log(kept / kept.sum(-1, keepdims=True)), jnp.float32)


@pytest.fixture(scope="module")
def teacher_and_data() -> tuple[LMParams, jax.Array]:
    """Generation 0 trained on real sequences, and its own samples (the students' pool)."""
    world = _world(train_cfg=dataclasses.replace(TRAIN, steps=150))
    real = world.sample_real(jax.random.key(0), TINY.n_samples)
    teacher = jax.jit(lambda k, d: world.fit(k, d, jnp.ones(TINY.n_samples), _dyn(), None))(
        jax.random.key(1), real)
    data = jax.jit(lambda k, p: world.generate(k, p, TINY.n_samples, _dyn()))(
        jax.random.key(2), teacher)
    return teacher, data


OBJECTIVE_CASES = [
    DistillConfig(objective=Objective.hard),
    DistillConfig(objective=Objective.soft, alpha=0.2, tau=2.0),
    DistillConfig(objective=Objective.topk, top_k=3, missing=Missing.renormalise),
    DistillConfig(objective=Objective.topk, top_k=3, missing=Missing.uniform),
    DistillConfig(objective=Objective.reverse_kl),
    DistillConfig(objective=Objective.jsd, beta=0.5),
    DistillConfig(objective=Objective.feature, tau=1.0, feature_weight=1.0),
    DistillConfig(objective=Objective.on_policy, on_policy_fraction=0.5, beta=0.5),
]


@pytest.mark.parametrize("distill", OBJECTIVE_CASES,
                         ids=lambda d: f"{d.objective.value}-{d.missing.value}")
def test_every_objective_lowers_its_loss_and_approaches_the_teacher(distill,
                                                                    teacher_and_data):
    teacher, data = teacher_and_data
    student = StudentConfig(width=8, heads=2) if distill.objective is Objective.feature \
        else StudentConfig()  # feature: a projection 8 -> 16 is learned jointly
    world = _world(distill, student)
    fit = jax.jit(lambda k, d: world.fit_with_losses(k, d, jnp.ones(TINY.n_samples),
                                                     _dyn(distill), teacher))
    params, losses = fit(jax.random.key(3), data)
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses))
    # the loss falls by more than its minibatch noise: 4 standard errors of the difference
    # of the two window means, each from its own spread (the early window's spread also
    # holds the steep start of training, which only widens it)
    first, last = losses[:5], losses[-10:]
    se = np.sqrt(first.var(ddof=1) / first.size + last.var(ddof=1) / last.size)
    assert last.mean() < first.mean() - 4 * se, (first.mean(), last.mean(), se, losses[::10])
    init = tf.init(jax.random.split(jax.random.key(3), 3)[0], world.student_arch)
    lossy = distill.objective is Objective.topk and distill.missing is Missing.renormalise
    # the student approaches the target its objective shows it: the full teacher, or for
    # renormalised top-k the teacher's top k renormalised, whose KL from the teacher is
    # infinite (the rest gets no mass), so the KL to the full teacher need only fall
    target = _renormalised_topk(world, teacher) if lossy else None
    before = _kl_teacher_student(world, teacher, init, world.student_arch, target)
    after = _kl_teacher_student(world, teacher, params.weights, params.cfg, target)
    assert after < 0.5 * before, (before, after)
    if lossy:
        assert _kl_teacher_student(world, teacher, params.weights, params.cfg) < \
            _kl_teacher_student(world, teacher, init, world.student_arch)
    assert params.cfg == world.student_arch


def test_train_flops_count_the_student_and_the_teacher_queries(teacher_and_data):
    teacher, _ = teacher_and_data
    tokens = TRAIN.steps * TRAIN.batch_size * TINY.seq_len
    fwd = tf.flops_per_token(teacher.cfg)
    for distill, per_token in [
            (DistillConfig(objective=Objective.hard), 3 * fwd),
            (DistillConfig(objective=Objective.soft), 4 * fwd),
            (DistillConfig(objective=Objective.feature), 4 * fwd + 6 * 16 * 16),
            (DistillConfig(objective=Objective.on_policy, on_policy_fraction=0.25),
             4.25 * fwd)]:
        world = _world(distill)
        flops = world.train_flops(distill.objective, world.student_arch, teacher,
                                  _dyn(distill))
        np.testing.assert_allclose(float(flops), tokens * per_token, rtol=1e-6)
    np.testing.assert_allclose(float(teacher.train_flops), 150 * 16 * 8 * 3 * fwd, rtol=1e-6)
    # a smaller student taught by another small student: both forward costs are its own
    small = _world(DistillConfig(objective=Objective.soft), StudentConfig(width=8, heads=1))
    small_teacher = LMParams(None, jnp.float32(0), small.student_arch)
    flops = small.train_flops(Objective.soft, small.student_arch, small_teacher, _dyn())
    np.testing.assert_allclose(float(flops), tokens * 4 * tf.flops_per_token(
        small.student_arch), rtol=1e-6)


def test_the_untaught_teacher_stands_in_for_none_where_the_fit_ignores_the_teacher():
    world = _world(train_cfg=dataclasses.replace(TRAIN, steps=5))
    real = world.sample_real(jax.random.key(0), TINY.n_samples)
    fit = jax.jit(lambda d, t: world.fit(jax.random.key(1), d, jnp.ones(TINY.n_samples),
                                         _dyn(), t))
    alone, stood_in = fit(real, None), fit(real, world.untaught_teacher())
    # the same model, of generation 0, at the same cost
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(stood_in)):
        np.testing.assert_array_equal(a, b)
    assert int(stood_in.generation) == 0 and stood_in.cfg == alone.cfg
    # none where the fit reads the teacher (its logits) or trains another architecture
    assert _world(DistillConfig(objective=Objective.soft)).untaught_teacher() is None
    assert _world(student=StudentConfig(width=8, heads=1)).untaught_teacher() is None


def test_sampling_never_emits_bos_and_greedy_is_deterministic(teacher_and_data):
    teacher, data = teacher_and_data
    assert data.shape == (TINY.n_samples, TINY.seq_len) and data.dtype == jnp.int32
    assert int(data.min()) >= 0 and int(data.max()) < TINY.vocab_size
    draw = jax.jit(lambda k, t: sample_sequences(k, teacher.weights, teacher.cfg, 16, 8, 8,
                                                 temperature=t))
    greedy = [np.asarray(draw(jax.random.key(s), 0.0)) for s in (0, 1)]
    np.testing.assert_array_equal(greedy[0], greedy[1])
    assert np.all(greedy[0] == greedy[0][0])  # one greedy sequence from BOS
    # the sort-free path (static temperature 1, no filters) draws the same tokens
    plain = jax.jit(lambda k: sample_sequences(k, teacher.weights, teacher.cfg, 16, 8, 8))
    np.testing.assert_array_equal(np.asarray(plain(jax.random.key(5))),
                                  np.asarray(draw(jax.random.key(5), 1.0)))


def test_sample_flops_count_the_rows_a_synthetic_count_schedule_makes():
    """The teacher samples n_g sequences for generation g (the rest of the n slots are
    masked), so the sampling cost follows the schedule."""
    chain = experiment.build(Config(world=TINY, generations=2, progress=False,
                                    mix=MixConfig(synthetic_schedule=(100, 25)))).chain
    teacher = LMParams(None, jnp.float32(0), chain.world.teacher_arch)
    per_row = tf.decode_flops(teacher.cfg, TINY.seq_len)
    for g, rows in [(1, 100), (2, 25)]:
        assert float(chain.sample_flops(teacher, g)) == pytest.approx(rows * per_row, 1e-6)


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_a_smaller_student_chain_retraces_and_records_params_and_flops():
    # with a planted trait (token 6 follows token 0 at rate 0.6), measured every generation
    world = dataclasses.replace(TINY, trait_trigger=(0,), trait_continuation=(6,),
                                trait_rate=0.6)
    cfg = Config(world=world, generations=2, seeds=1, progress=False,
                 train=TrainConfig(steps=20, batch_size=8),
                 student=StudentConfig(width=8, layers=1, heads=1))
    built = experiment.build(cfg)
    ds = experiment.run(built)
    student_arch = built.chain.world.student_arch
    params = ds.params.isel(seed=0).values
    assert params[0] > params[1] == params[2]
    assert params[1] == tf.param_count(tf.init(jax.random.key(0), student_arch))
    flops = ds.train_flops.isel(seed=0).values
    np.testing.assert_allclose(flops[1:], 20 * 8 * TINY.seq_len
                               * tf.train_flops_per_token(student_arch), rtol=1e-6)
    # the teacher's sampling: none at generation 0, then generation g - 1's architecture
    sampled = [tf.decode_flops(arch, TINY.seq_len) * TINY.n_samples
               for arch in (built.chain.world.teacher_arch, student_arch)]
    np.testing.assert_allclose(ds.sample_flops.isel(seed=0), [0, *sampled], rtol=1e-6)
    assert np.isnan(ds.agreement.sel(generation=0)).all()
    assert ((ds.agreement.sel(generation=[1, 2]) >= 0)
            & (ds.agreement.sel(generation=[1, 2]) <= 1)).all()
    for name in ds.data_vars:
        assert np.isfinite(ds[name].sel(generation=[1, 2]).values).all(), name
    assert {"trait_rate", "trait_probability", "trait_amplification"} <= set(ds.data_vars)
    assert ds.trait_amplification.sel(generation=0).item() == 1.0
    np.testing.assert_allclose(ds.trait_amplification.values[:, 0],
                               ds.trait_rate.values[:, 0] / ds.trait_rate.values[0, 0],
                               rtol=1e-6)
    assert ((ds.trait_probability > 0) & (ds.trait_probability < 1)).all()
    assert ds.rank_frequency.dims == ("generation", "seed", "rank")
    np.testing.assert_allclose(ds.rank_frequency.sum("rank"), 1.0, rtol=1e-5)


def test_train_passes_a_fresh_key_per_step_to_losses_that_ask_for_one():
    def loss(params, batch, key):  # the loss value reveals the key it was given
        return jnp.sum(params * batch) * 0.0 + jax.random.uniform(key)

    _, losses = train(jax.random.key(0), jnp.ones(3), loss, jnp.ones((4, 3)), jnp.ones(4),
                      5, 2, loss_takes_key=True)
    assert len(set(np.asarray(losses).tolist())) == 5


def test_entropy_rate_is_the_entropy_of_the_models_own_sampling(teacher_and_data):
    """0 for a greedy model; at temperature 1 the mean entropy of its next-token
    distributions on its own samples, which a peaked model keeps below log V."""
    teacher, _ = teacher_and_data
    world = _world()
    measure = jax.jit(lambda k, t: world.measure(
        k, teacher, None, {**_dyn(), "sampling.temperature": t}))
    assert float(measure(jax.random.key(0), jnp.float32(0.0))["entropy_rate"]) == 0.0
    at_one = measure(jax.random.key(0), jnp.float32(1.0))
    rate = float(at_one["entropy_rate"])
    assert 0.5 < rate < np.log(TINY.vocab_size)
    produced = world.generate(jax.random.key(0), teacher, TINY.eval_sequences, _dyn())
    logits, _ = world.forward(teacher.weights, teacher.cfg, produced)
    probs = jax.nn.softmax(logits)
    expected = float(jnp.mean(-jnp.sum(probs * jnp.log(probs), -1)))
    assert rate == pytest.approx(expected, rel=1e-4)


def test_measure_scores_the_models_own_sample_and_the_teacher_kl_forward(teacher_and_data):
    """The produced-text metrics are those of the sequences the model samples with the
    measuring key (not of the held-out real text), and kl_teacher_student is
    KL(teacher || student) on the held-out real positions."""
    teacher, pool = teacher_and_data
    world = _world()
    student = jax.jit(lambda k, d: world.fit(k, d, jnp.ones(TINY.n_samples), _dyn(), teacher))(
        jax.random.key(5), pool)
    key = jax.random.key(7)
    measured = jax.jit(lambda k: world.measure(k, student, teacher, _dyn()))(key)
    produced = sample_sequences(key, student.weights, student.cfg, TINY.eval_sequences,
                                TINY.seq_len, TINY.vocab_size)
    expected = jax.jit(world.sample_metrics)(produced)
    of_real_text = jax.jit(world.sample_metrics)(world.eval_ExL)
    assert set(expected) >= {"entropy", "distinct_n", "self_bleu", "vendi",
                             "support_coverage", "rank_frequency", "compression_ratio"}
    for name in expected:  # compression_ratio: the tokens the host will gzip
        np.testing.assert_allclose(measured[name], expected[name], rtol=1e-5, err_msg=name)
    assert not np.allclose(measured["distinct_n"], of_real_text["distinct_n"])
    kl_forward = _kl_teacher_student(world, teacher, student.weights, student.cfg)
    kl_reverse = _kl_teacher_student(world, student, teacher.weights, teacher.cfg)
    assert abs(kl_forward - kl_reverse) > 1e-3 * kl_forward
    assert float(measured["kl_teacher_student"]) == pytest.approx(kl_forward, rel=1e-4)


def test_on_policy_students_learn_from_their_own_samples(teacher_and_data):
    """With on_policy_fraction = 1 every minibatch is the student's own sample, scored by
    the teacher: the pool's contents cannot matter. At 0 they do."""
    teacher, pool = teacher_and_data
    real = _world().sample_real(jax.random.key(11), TINY.n_samples)

    distill = DistillConfig(objective=Objective.on_policy)
    world = _world(distill, train_cfg=dataclasses.replace(TRAIN, steps=10))
    fit = jax.jit(lambda fraction, d: world.fit(
        jax.random.key(5), d, jnp.ones(TINY.n_samples),
        {**_dyn(distill), "distill.on_policy_fraction": fraction}, teacher).weights)
    leaves = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])  # noqa: E731
    np.testing.assert_array_equal(leaves(fit(1.0, pool)), leaves(fit(1.0, real)))
    assert not np.allclose(leaves(fit(0.0, pool)), leaves(fit(0.0, real)))


@pytest.mark.parametrize("top_p,sorts", [(1.0, False), (0.9, True), (jnp.float32(1.0), True)])
def test_sampling_ranks_the_vocabulary_only_when_a_filter_may_be_on(top_p, sorts):
    # top_p = 1.0 as a Python value compiles the filter out; a traced one cannot know
    world = _world()
    arch = world.teacher_arch
    weights = tf.init(jax.random.key(0), arch)
    jaxpr = jax.make_jaxpr(lambda k, t: sample_sequences(k, weights, arch, 4, 3, world.vocab,
                                                         temperature=t, top_p=top_p))(
        jax.random.key(1), jnp.float32(1.0))
    assert (" sort[" in str(jaxpr)) == sorts  # the primitive, not indices_are_sorted
