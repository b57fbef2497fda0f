"""The digits world: an MLP teacher on load_digits, students distilled from it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim import experiment
from sim.config import Config
from sim.distill import (DistillConfig, Missing, Objective, SamplingConfig, StudentConfig,
                         TrainConfig, dynamic_settings)
from sim.errors import ConfigError
from sim.models import mlp
from sim.worlds.digits import Classifier, DigitsConfig, DigitsWorld
from sim.worlds.digits_data import MARKER, TEST_DRAWS
from stats import assert_mean

TRAIN = TrainConfig(steps=300, batch_size=32, lr=3e-3)
STUDENT = StudentConfig(hidden=(16,))
TEACHER_PARAMS = 64 * 64 + 64 + 64 * 10 + 10
STUDENT_PARAMS = 64 * 16 + 16 + 16 * 10 + 10


def _world(distill=DistillConfig(), sampling=SamplingConfig(), train=TRAIN, student=STUDENT,
           **world):
    return DigitsWorld(DigitsConfig(**world), distill, sampling, train, student)


def _dyn(distill=DistillConfig(), sampling=SamplingConfig(), train=TRAIN):
    return {k: jnp.float32(v) for k, v in dynamic_settings(distill, sampling, train).items()}


@pytest.fixture(scope="module")
def teacher():
    """Generation 0 trained on all training images, and its metrics."""
    world = _world()

    @jax.jit
    def start(key):
        k_real, k_fit = jax.random.split(key)
        data = world.sample_real(k_real, world.n_samples)
        params = world.fit(k_fit, data, jnp.ones(world.n_samples), _dyn(), None)
        return params, world.measure(key, params, None)

    return start(jax.random.key(0))


@pytest.fixture(scope="module")
def generate():
    world = _world()
    return jax.jit(lambda key, params, dyn: world.generate(key, params, world.n_samples, dyn))


@pytest.fixture(scope="module")
def measure(teacher):
    """Metrics of a student against the teacher (shared by every objective), and those of
    an untrained student."""
    world, (params, _) = _world(), teacher
    measure = jax.jit(lambda student: world.measure(jax.random.key(4), student, params))
    untrained = mlp.init(jax.random.key(3), world.student_mlp)
    return measure, measure(Classifier(untrained, None))


def _better(hits_N: np.ndarray, reference_hits_N: np.ndarray, z: float = 4.0) -> None:
    """The hit rate of hits_N exceeds that of reference_hits_N by more than z standard
    errors of their paired difference over the same test points."""
    d_N = hits_N.astype(np.float64) - reference_hits_N
    se = d_N.std(ddof=1) / np.sqrt(d_N.size)
    assert d_N.mean() > z * se, (hits_N.mean(), reference_hits_N.mean(), se)


def test_teacher_learns_the_digits(teacher):
    _, metrics = teacher
    assert metrics["accuracy"] > 0.9
    assert metrics["nll_real"] < 0.5
    assert np.isnan(metrics["agreement"]) and np.isnan(metrics["kl_teacher_student"])
    assert metrics["params"] == TEACHER_PARAMS
    assert metrics["train_flops"] == pytest.approx(
        TRAIN.steps * TRAIN.batch_size * 3 * 2 * (64 * 64 + 64 * 10), rel=1e-6)


def test_argmax_labelling_gives_the_teacher_argmax(teacher, generate):
    params, _ = teacher
    world = _world()
    greedy = generate(jax.random.key(1), params, _dyn(sampling=SamplingConfig(temperature=0.0)))
    np.testing.assert_array_equal(greedy["row"], np.arange(len(world.y_train)))
    logits, _ = mlp.apply(params.weights, world.x_train, world.teacher_mlp)
    np.testing.assert_array_equal(greedy["y"], jnp.argmax(logits, -1))
    sampled = generate(jax.random.key(1), params, _dyn())
    # at T = 1 image i's label leaves the argmax with probability 1 - max_c p_c(i), each
    # image independently: the mismatch rate is their mean, within its binomial error
    miss_N = 1 - np.asarray(jax.nn.softmax(logits, -1)).max(-1)
    mismatch = np.mean(sampled["y"] != greedy["y"])
    se = np.sqrt(np.sum(miss_N * (1 - miss_N))) / len(miss_N)
    assert abs(mismatch - miss_N.mean()) < 4 * se, (mismatch, miss_N.mean(), se)


@pytest.mark.parametrize("objective,extra", [
    ("hard", {}), ("soft", {"tau": 2.0, "alpha": 0.2}), ("topk", {"top_k": 3}),
    ("topk", {"top_k": 3, "missing": Missing.uniform}), ("reverse_kl", {}),
    ("jsd", {"beta": 0.5}), ("feature", {"tau": 2.0}),
])
def test_every_objective_moves_a_smaller_student_toward_the_teacher(teacher, generate, measure,
                                                                    objective, extra):
    """Generation 1 of a chain: the teacher labels the images, a student is distilled."""
    distill = DistillConfig(objective=Objective(objective), **extra)
    world, dyn = _world(distill), _dyn(distill)
    params, _ = teacher
    data = generate(jax.random.key(2), params, dyn)
    fit = jax.jit(lambda key, data: world.fit(key, data, jnp.ones(world.n_samples), dyn, params))
    measure, untrained = measure
    student = fit(jax.random.key(3), data)
    trained = measure(student)
    untrained_weights = mlp.init(jax.random.key(3), world.student_mlp)  # as the fixture's
    assert trained["kl_teacher_student"] < 0.3 * untrained["kl_teacher_student"]
    # Agreement with the teacher and accuracy rise above the untrained student's by more
    # than 4 standard errors of the per-image difference (the same test images score both).
    # The student's accuracy is at least the teacher's less the share where they disagree.
    predict = jax.jit(lambda w: jnp.argmax(world._class_logits(w, world.x_test), -1))
    s_N, u_N, t_N = (np.asarray(predict(w)) for w in (student.weights, untrained_weights,
                                                      params.weights))
    y_N = np.asarray(world.y_test)
    assert float(trained["agreement"]) == pytest.approx(np.mean(s_N == t_N), abs=1e-6)
    assert float(trained["accuracy"]) == pytest.approx(np.mean(s_N == y_N), abs=1e-6)
    _better(s_N == t_N, u_N == t_N)
    _better(s_N == y_N, u_N == y_N)
    assert np.mean(s_N == y_N) >= np.mean(t_N == y_N) - np.mean(s_N != t_N)
    assert trained["params"] == STUDENT_PARAMS < TEACHER_PARAMS
    queries = 0 if objective == "hard" else 2 * (64 * 64 + 64 * 10)
    projection = 3 * 2 * 16 * 64 if objective == "feature" else 0
    assert world.train_flops(world.student_mlp, world.teacher_mlp) == pytest.approx(
        TRAIN.steps * TRAIN.batch_size * (3 * 2 * (64 * 16 + 16 * 10) + queries + projection),
        rel=1e-6)


@pytest.mark.filterwarnings("ignore:Some donated buffers")  # the student is smaller
def test_a_chain_runs_with_a_smaller_student_on_a_subset():
    cfg = Config(world=DigitsConfig(n_samples=200), distill=DistillConfig(Objective.soft),
                 train=TrainConfig(steps=200), student=StudentConfig(hidden=(8,)),
                 generations=1, seeds=2, progress=False)
    built = experiment.build(cfg)
    ds, world = experiment.run(built), built.chain.world
    assert ds.sizes == {"generation": 2, "seed": 2}
    assert ds.agreement.sel(generation=0).isnull().all()
    assert ds.agreement.sel(generation=1).notnull().all()
    # generation 0 trained without a teacher to query, the soft student with one
    np.testing.assert_allclose(ds.train_flops.sel(generation=0),
                               world.train_flops(world.teacher_mlp, None), rtol=1e-6)
    np.testing.assert_allclose(ds.train_flops.sel(generation=1),
                               world.train_flops(world.student_mlp, world.teacher_mlp), rtol=1e-6)
    np.testing.assert_array_equal(ds.params.sel(generation=1), 64 * 8 + 8 + 8 * 10 + 10)
    # the teacher labels the student's 200 inputs: one forward each
    np.testing.assert_allclose(ds.sample_flops, [[0, 0], [200 * 2 * (64 * 64 + 64 * 10)] * 2],
                               rtol=1e-6)
    assert (ds.accuracy > 0.5).all() and (ds.agreement.sel(generation=1) > 0.5).all()


def test_real_subsets_are_distinct_training_rows():
    world = _world(n_samples=100)
    assert world.n_samples == 100 and _world().n_samples == len(world.y_train) == 1257
    idx = np.asarray(world._rows(jax.random.key(0), world.n_samples))
    assert len(np.unique(idx)) == 100 and idx.min() >= 0 and idx.max() < 1257
    data = world.sample_real(jax.random.key(0), world.n_samples)
    np.testing.assert_array_equal(data["row"], idx)
    np.testing.assert_array_equal(data["y"], world.y_train[idx])
    assert float(world.x_train.min()) == 0.0 and float(world.x_train.max()) == 1.0


def test_on_policy_is_rejected_with_one_line():
    with pytest.raises(ConfigError, match=r"distill.objective='on_policy'.*never produces "
                       r"inputs") as err:
        _world(DistillConfig(objective=Objective.on_policy))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs,key", [
    ({"test_fraction": 0.0}, "world.test_fraction"),
    ({"test_fraction": 1.0}, "world.test_fraction"),
    ({"test_fraction": 0.999}, "world.test_fraction"),
    ({"n_samples": -1}, "world.n_samples"),
    ({"hidden": (64, 0)}, "world.hidden"),
    ({"activation": "sigmoid"}, "world.activation"),
    ({"distill": DistillConfig(objective=Objective.topk, top_k=11)}, "distill.top_k"),
])
def test_bad_values_are_one_line_errors_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^{key}=") as err:
        _world(**kwargs)
    assert "\n" not in str(err.value)


def test_class_subset_and_prior_skew_set_the_majority_and_prior_bias():
    world = _world(classes=(3, 8), prior=(0.9, 0.1))
    assert set(np.unique(world.y_train).tolist()) == {3, 8}
    assert world.majority == 3 and world.true_majority_share == pytest.approx(0.9, abs=0.01)
    test_share = float(np.mean(np.asarray(world.y_test) == 3))
    assert test_share == pytest.approx(0.9, abs=0.02)
    # a model that always predicts the majority: prior_bias = 1 - 0.9
    always = mlp.init(jax.random.key(0), world.teacher_mlp)
    always["head"]["bias"] = jnp.zeros(10).at[3].set(100.0)
    metrics = world.measure(jax.random.key(0), Classifier(always, None), None)
    assert float(metrics["prior_bias"]) == pytest.approx(1 - world.true_majority_share, abs=1e-6)
    assert float(metrics["majority_share"]) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics["support_coverage"]) == 0.5  # only one of the two classes
    # at temperature 1, equal logits for 3 and 8 (and none elsewhere) label half as 3
    even = jax.tree_util.tree_map(jnp.zeros_like, always)
    even["head"]["bias"] = jnp.full(10, -100.0).at[jnp.array([3, 8])].set(0.0)
    metrics = world.measure(jax.random.key(0), Classifier(even, None), None)
    assert float(metrics["majority_share"]) == pytest.approx(0.5, abs=1e-6)
    assert float(metrics["support_coverage"]) == 1.0
    for bad, key in (({"classes": (3,)}, "world.classes"), ({"classes": (3, 11)}, "world.classes"),
                     ({"classes": (3, 8), "prior": (1.0,)}, "world.prior")):
        with pytest.raises(ConfigError, match=rf"^{key}="):
            _world(**bad)


def test_pixel_noise_makes_every_draw_a_new_input_and_fixed_noisy_test_copies():
    world = _world(pixel_noise=0.5, n_samples=3000)
    assert world.n_samples == 3000 > world.n_train
    assert len(world.y_test) == TEST_DRAWS * len(_world().y_test)
    rows = world.sample_real(jax.random.key(0), 3000)["row"]
    assert len(np.unique(rows)) == 3000  # distinct draws, though only 1257 images
    np.testing.assert_array_equal(world.sample_real(jax.random.key(0), 3000)["y"],
                                  world.y_train[rows % world.n_train])
    x = world._pixels(rows)
    np.testing.assert_array_equal(x, world._pixels(rows))  # a row always names one input
    noise = x - world.x_train[rows % world.n_train]
    assert float(jnp.std(noise)) == pytest.approx(0.5, rel=0.02)
    assert abs(float(jnp.mean(noise))) < 0.01
    clean = _world()
    np.testing.assert_array_equal(clean._pixels(jnp.arange(5)), clean.x_train[:5])


def test_marker_and_fairness_gaps_of_a_model_that_only_reads_the_marker():
    """Marker pixels drive class 7, everything else is 0 (ties go to class 0): the
    predictions are 7 on the group and 0 off it, so every gap is known exactly."""
    world = _world(hidden=(), group_share=0.3, spurious_class=7, spurious_share=0.9)
    marked_train = np.all(np.asarray(world.x_train)[:, MARKER] == 1.0, axis=1)
    y_train, y_test = np.asarray(world.y_train), np.asarray(world.y_test)
    assert np.mean(marked_train[y_train == 7]) == pytest.approx(0.9, abs=0.06)
    assert np.mean(marked_train[y_train != 7]) == pytest.approx(0.3, abs=0.04)
    group = np.asarray(world.group_test)
    assert np.mean(group) == pytest.approx(0.3, abs=0.05)
    np.testing.assert_array_equal(
        np.all(np.asarray(world.x_test)[:, MARKER] == 1.0, axis=1), group)
    weights = {"head": {"kernel": jnp.zeros((64, 10)).at[MARKER, 7].set(10.0),
                        "bias": jnp.zeros(10).at[7].set(-35.0)}}
    metrics = world.measure(jax.random.key(0), Classifier(weights, None), None)
    pred = np.where(group, 7, 0)
    accuracy = lambda m: np.mean(pred[m] == y_test[m])
    assert float(metrics["accuracy"]) == pytest.approx(np.mean(pred == y_test), abs=1e-6)
    assert float(metrics["group_accuracy_gap"]) == pytest.approx(
        abs(accuracy(group) - accuracy(~group)), abs=1e-6)
    assert float(metrics["demographic_parity_gap"]) == pytest.approx(1.0)
    assert float(metrics["equalized_odds_gap"]) == pytest.approx(1.0)
    assert np.isnan(metrics["subliminal_accuracy"])
    plain = _world(hidden=()).measure(jax.random.key(0), Classifier(weights, None), None)
    assert all(np.isnan(plain[k]) for k in ("group_accuracy_gap", "demographic_parity_gap",
                                            "equalized_odds_gap"))


def test_a_subliminal_student_trains_only_shared_weights_from_the_teachers_init(teacher):
    """Shown only the auxiliary logits on off-task inputs, a same-init student's class head
    keeps its initial values exactly (no gradient reaches it; no weight decay)."""
    distill = DistillConfig(objective=Objective.soft)
    train = TrainConfig(steps=50, batch_size=32, lr=3e-3, weight_decay=0.0)
    world = _world(distill, train=train, student=StudentConfig(), auxiliary_logits=3,
                   student_inputs="noise", student_targets="auxiliary", same_init=True)
    assert world.teacher_mlp.classes == 13
    dyn = _dyn(distill, train=train)
    start = world.fit(jax.random.key(0), world.sample_real(jax.random.key(1), 64),
                      jnp.ones(64), dyn, None)
    data = world.generate(jax.random.key(2), start, 64, dyn)
    assert (np.asarray(data["row"]) < 0).all()
    x = np.asarray(world._pixels(data["row"]))
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9
    student = world.fit(jax.random.key(3), data, jnp.ones(64), dyn, start)
    head, init = student.weights["head"]["kernel"], start.init["head"]["kernel"]
    np.testing.assert_array_equal(student.init["head"]["kernel"], init)
    np.testing.assert_array_equal(head[:, :10], init[:, :10])
    assert not np.allclose(head[:, 10:], init[:, 10:])
    assert not np.allclose(student.weights["dense_0"]["kernel"], start.init["dense_0"]["kernel"])
    metrics = world.measure(jax.random.key(4), student, start, dyn)
    assert float(metrics["subliminal_accuracy"]) == float(metrics["accuracy"])


@pytest.mark.parametrize("kwargs,key", [
    ({"pixel_noise": -0.1}, "world.pixel_noise"),
    ({"group_share": 1.0}, "world.group_share"),
    ({"spurious_share": 0.5}, "world.spurious_share"),
    ({"group_share": 0.2, "spurious_share": 0.5, "spurious_class": 3, "classes": (1, 2)},
     "world.spurious_class"),
    ({"student_targets": "auxiliary", "auxiliary_logits": 1}, "world.auxiliary_logits"),
    ({"student_targets": "auxiliary", "auxiliary_logits": 3}, "distill.objective"),
    ({"student_inputs": "pixels"}, "world.student_inputs"),
    ({"same_init": True}, "student.hidden"),
])
def test_bad_group_noise_and_subliminal_settings_are_one_line_errors(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^{key}=") as err:
        _world(**kwargs)
    assert "\n" not in str(err.value)


def test_kl_teacher_student_is_the_forward_kl_on_the_test_images(teacher):
    """mean_x KL(p_teacher(.|x) || p_student(.|x)), against numpy; the reverse direction
    differs by far more than float rounding for an untrained student."""
    world, (params, _) = _world(), teacher
    student = Classifier(mlp.init(jax.random.key(3), world.student_mlp), None)
    measured = float(jax.jit(lambda s, t: world.measure(jax.random.key(4), s, t))(
        student, params)["kl_teacher_student"])

    def log_probs(weights):
        logits = np.asarray(world._class_logits(weights, world.x_test), np.float64)
        return logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(
            1, keepdims=True)) - logits.max(1, keepdims=True)

    log_t, log_s = log_probs(params.weights), log_probs(student.weights)
    forward = np.mean(np.sum(np.exp(log_t) * (log_t - log_s), 1))
    reverse = np.mean(np.sum(np.exp(log_s) * (log_s - log_t), 1))
    assert abs(forward - reverse) > 0.05 * forward
    assert measured == pytest.approx(forward, rel=1e-4)


def test_subliminal_transfer_needs_the_teachers_initial_weights():
    """The subliminal headline (conf/experiment/subliminal_digits.yaml), small: distilled only
    on auxiliary logits of random-pixel inputs, a student that starts from the teacher's
    initial weights classifies digits above chance; one with its own initial weights stays
    at chance. Chance for a student is the accuracy of its predictions were they
    independent of the labels, sum_c P(pred = c) P(y = c); the seeds (lanes of one program)
    are independent replicates, and the test uses the spread across them, since one
    network's test predictions are not independent draws."""
    distill = DistillConfig(objective=Objective.soft)
    train = TrainConfig(steps=200, batch_size=64, lr=3e-3)
    dyn, n, seeds = _dyn(distill, train=train), 1000, 8
    same, other = (_world(distill, train=train, student=StudentConfig(), hidden=(32,),
                          auxiliary_logits=10, student_inputs="noise",
                          student_targets="auxiliary", same_init=s) for s in (True, False))

    def predictions(key):
        k = jax.random.split(key, 4)
        teacher = same.fit(k[0], same.sample_real(k[1], same.n_samples),
                           jnp.ones(same.n_samples), dyn, None)
        data = same.generate(k[2], teacher, n, dyn)
        return jnp.stack([jnp.argmax(w._class_logits(
            w.fit(k[3], data, jnp.ones(n), dyn, teacher).weights, w.x_test), -1)
            for w in (same, other)])

    pred_SxWxN = np.asarray(jax.jit(jax.vmap(predictions))(
        jax.random.split(jax.random.key(0), seeds)))
    y_N = np.asarray(same.y_test)
    p_y = np.bincount(y_N, minlength=10) / y_N.size
    chance_SxW = np.apply_along_axis(lambda p: np.bincount(p, minlength=10) @ p_y / p.size,
                                     -1, pred_SxWxN)
    above_SxW = np.mean(pred_SxWxN == y_N, -1) - chance_SxW
    same_S, other_S = above_SxW.T
    se = same_S.std(ddof=1) / np.sqrt(seeds)
    assert same_S.mean() > 4 * se, (same_S, se)
    assert_mean(other_S, 0.0)
