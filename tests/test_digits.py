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
    return measure, measure(Classifier(untrained, untrained))


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
    assert 0 < np.mean(sampled["y"] != greedy["y"]) < 0.1  # a confident teacher, T = 1


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
    trained = measure(fit(jax.random.key(3), data))
    assert trained["kl_teacher_student"] < 0.3 * untrained["kl_teacher_student"]
    assert trained["agreement"] > 0.85 > untrained["agreement"] + 0.5
    assert trained["accuracy"] > 0.8
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
    ds = experiment.run(experiment.build(cfg))
    assert ds.sizes == {"generation": 2, "seed": 2}
    assert ds.agreement.sel(generation=0).isnull().all()
    assert ds.agreement.sel(generation=1).notnull().all()
    np.testing.assert_array_equal(ds.params.sel(generation=1), 64 * 8 + 8 + 8 * 10 + 10)
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
    ({"n_samples": 1258}, "world.n_samples"),
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
    assert world.majority == 3 and world.majority_share == pytest.approx(0.9, abs=0.01)
    test_share = float(np.mean(np.asarray(world.y_test) == 3))
    assert test_share == pytest.approx(0.9, abs=0.02)
    # a model that always predicts the majority: prior_bias = 1 - 0.9
    always = mlp.init(jax.random.key(0), world.teacher_mlp)
    always["head"]["bias"] = jnp.zeros(10).at[3].set(100.0)
    bias = float(world.measure(jax.random.key(0), Classifier(always, always), None)["prior_bias"])
    assert bias == pytest.approx(1 - world.majority_share, abs=1e-6)
    for bad, key in (({"classes": (3,)}, "world.classes"), ({"classes": (3, 11)}, "world.classes"),
                     ({"classes": (3, 8), "prior": (1.0,)}, "world.prior")):
        with pytest.raises(ConfigError, match=rf"^{key}="):
            _world(**bad)
