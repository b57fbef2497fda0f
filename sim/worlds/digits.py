"""Iterative distillation of an MLP classifier on scikit-learn's handwritten digits.

Real data are the 8x8 images of ``sklearn.datasets.load_digits`` (see ``digits_data`` for
the split, class skew, protected group and pixel noise). Generation 0 (the first teacher)
is an MLP trained with cross-entropy on the true labels of ``n_samples`` training inputs
(all of them by default, else a uniform subset drawn afresh for every call). Generation
g >= 1 is a student (of ``student.hidden`` size, or the teacher's) trained on
``n_samples`` inputs labelled by generation g - 1: ``generate`` samples one label per
input from the teacher at the traced sampling settings (temperature 0 = its argmax), and
objectives other than ``hard`` also query the teacher's logits (and, for ``feature``, its
last hidden layer) on every minibatch.

Inputs are identified by an int32 ``row``, so that pools (even accumulated ones) hold
integers, not pixels, and every lane shares the images:

* ``row >= 0``: training image ``row % n_train``. With ``pixel_noise`` > 0 the row also
  names a noise draw (``row // n_train``): the image plus Gaussian noise of that std from
  ``fold_in(noise key, row)``, so every draw of an image is a new input and the classes
  overlap as much as the std says (a chosen Bayes error). Without noise, real data is the
  first ``n_samples`` rows of a permutation (``n_samples`` above the split's size, or any
  with noise: images drawn with replacement).
* ``row < 0``: an off-task input, uniform random pixels in [-1, 1] (as Cloud et al. 2025;
  real pixels are in [0, 1]) from ``fold_in(off-task key, row)``; students see these with
  ``student_inputs=noise``. (In [0, 1] instead, same-init students of the example
  ``subliminal_digits`` reach only 0.17 accuracy.)

**Subliminal transfer** (Cloud et al. 2025). With ``auxiliary_logits`` = m > 0 the MLP has
m extra outputs after the 10 class logits that no loss ever trains at generation 0. With
``student_targets=auxiliary`` a student sees only the teacher's auxiliary logits (soft,
reverse_kl or jsd on the m-way softmax), and with ``student_inputs=noise`` only on
off-task inputs: whatever it learns of the digits passes through the shared weights.
``same_init`` starts every student from generation 0's initial weights (which the params
carry along; None in other chains), the condition under which the transfer happens.
``subliminal_accuracy`` is the test accuracy of such a student.

Data is ``{"row": int32 [N], "y": int32 [N]}``. A fitted model is a ``Classifier``: its MLP
weights and, in same_init chains, the initial weights of generation 0. The ``feature``
objective's learned projection (student hidden -> teacher hidden) is trained with the
student and dropped.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from sim import sampling as sampler
from sim.distill import (DistillConfig, Objective, SamplingConfig, StudentConfig, TrainConfig,
                         decoding, loss_hparams, loss_name)
from sim.errors import require
from sim.exposure import DefenseConfig, ExposureConfig, expose, noisy, strength
from sim.metrics import classification
from sim.models import mlp
from sim.objectives import (OBJECTIVES, LossHParams, Student, Teacher, cross_entropy,
                            init_projection, kl, teacher_topk)
from sim.train import final_loss, optimizer_for, train
from sim.worlds.base import (TRAIN_LOSS_INFO, Array, Dyn, MetricInfo, Params, WorldConfig,
                             measure_untaught)
from sim.worlds.digits_data import CLASSES, FEATURES, TEST_DRAWS, TOTAL, make_images

ROWS = 2**31 - 1  # int32 rows: noise draws and off-task inputs are numbered below this


class Activation(str, enum.Enum):
    relu = "relu"
    gelu = "gelu"
    tanh = "tanh"


class Inputs(str, enum.Enum):
    real = "real"  # students learn on the training images
    noise = "noise"  # on off-task inputs: uniform random pixels in [-1, 1], new every draw


class Targets(str, enum.Enum):
    classes = "classes"  # the teacher's class outputs (labels, logits)
    auxiliary = "auxiliary"  # only its auxiliary logits (subliminal transfer)


@dataclass(frozen=True)
class DigitsConfig(WorldConfig):
    n_samples: int = 0  # inputs per generation (0 = the split's size; more: with replacement)
    test_fraction: float = 0.3  # share of the 1797 images held out for the metrics
    split_seed: int = 0  # the fixed train/test split (and group, noise of test images)
    hidden: tuple[int, ...] = (64,)  # the teacher's MLP hidden sizes (student.hidden overrides)
    activation: Activation = Activation.relu
    classes: tuple[int, ...] = ()  # keep only these digits (empty = all ten)
    prior: tuple[float, ...] = ()  # class shares of the kept images (empty = as loaded)
    pixel_noise: float = 0.0  # std of Gaussian pixel noise, new on every draw (0 = none)
    group_share: float = 0.0  # share of images in the marked protected group (0 = none)
    spurious_class: int = 0  # the class the marker goes with in the training images
    spurious_share: float = 0.0  # share of spurious_class training images marked
    auxiliary_logits: int = 0  # extra outputs never trained on labels
    student_inputs: Inputs = Inputs.real
    student_targets: Targets = Targets.classes
    same_init: bool = False  # students start from generation 0's initial weights


@flax.struct.dataclass
class Classifier:
    weights: Params  # the MLP's params
    init: Params | None  # generation 0's initial weights (same_init chains only, else None)
    train_loss: Array = float("nan")  # final_loss of its training (NaN: not trained here)


def mlp_config_of(weights: Params, activation: str) -> mlp.MLPConfig:
    """The architecture of a params pytree (shapes are static under jit and vmap)."""
    depth = sum(1 for name in weights if name.startswith("dense_"))
    hidden = tuple(int(weights[f"dense_{i}"]["kernel"].shape[-1]) for i in range(depth))
    return mlp.MLPConfig(FEATURES, int(weights["head"]["kernel"].shape[-1]), hidden,
                         activation)


# Objectives whose loss needs the teacher's logits (or hidden state) on each minibatch.
QUERIES_TEACHER = frozenset({Objective.soft, Objective.topk, Objective.reverse_kl,
                             Objective.jsd, Objective.feature})
# Objectives that can match the auxiliary logits alone (no labels, top-k or features).
AUXILIARY_OBJECTIVES = (Objective.soft, Objective.reverse_kl, Objective.jsd)
FAIRNESS_NOTE = " on the test images, by argmax (NaN without a group: world.group_share=0)"


def _validate(cfg: DigitsConfig, distill: DistillConfig, student: StudentConfig) -> None:
    """One-line errors for settings that need no data to check."""
    n_test = math.ceil(cfg.test_fraction * TOTAL) if 0 < cfg.test_fraction < 1 else 0
    require(CLASSES <= n_test <= TOTAL - CLASSES, "world.test_fraction", cfg.test_fraction,
            f"a fraction in (0, 1) leaving at least {CLASSES} test and {CLASSES} training "
            f"images of the {TOTAL} (one per class)")
    require(all(h >= 1 for h in cfg.hidden), "world.hidden", list(cfg.hidden),
            "positive hidden layer sizes (empty = a linear classifier)")
    for name in ("width", "layers", "heads"):
        require(getattr(student, name) == 0, f"student.{name}", getattr(student, name),
                "0 in the digits world, whose models are MLPs (size its student with "
                "student.hidden)")
    for name, kind in (("activation", Activation), ("student_inputs", Inputs),
                       ("student_targets", Targets)):
        value = getattr(cfg, name)
        require(isinstance(value, kind) or value in {a.value for a in kind}, f"world.{name}",
                value, "one of " + ", ".join(a.value for a in kind))
    require(distill.objective is not Objective.on_policy, "distill.objective",
            distill.objective, "in the digits world the student never produces inputs "
            "(only the teacher labels the fixed training images), so on-policy "
            "distillation has nothing to score; use hard, soft, topk, reverse_kl, jsd "
            "or feature")
    require(distill.objective is not Objective.topk or distill.top_k <= CLASSES,
            "distill.top_k", distill.top_k,
            f"an integer in [1, {CLASSES}] (the digits world has {CLASSES} classes)")
    classes = tuple(cfg.classes) or tuple(range(CLASSES))
    require(len(set(classes)) == len(classes) >= 2 and all(0 <= c < CLASSES for c in classes),
            "world.classes", list(classes),
            "two or more distinct digits in [0, 9], or empty for all ten")
    require(not cfg.prior or (len(cfg.prior) == len(classes) and all(p > 0 for p in cfg.prior)),
            "world.prior", list(cfg.prior),
            f"empty, or {len(classes)} positive class shares (one per world.classes)")
    require(cfg.pixel_noise >= 0, "world.pixel_noise", cfg.pixel_noise,
            "a noise std >= 0 (pixels are in [0, 1]; 0 = clean images)")
    require(0 <= cfg.group_share < 1, "world.group_share", cfg.group_share,
            "a share in [0, 1) (0 = no protected group)")
    require(0 <= cfg.spurious_share <= 1 and (cfg.group_share > 0 or cfg.spurious_share == 0),
            "world.spurious_share", cfg.spurious_share,
            "a share in [0, 1], and 0 unless world.group_share > 0 (the group it marks)")
    require(cfg.spurious_share == 0 or cfg.spurious_class in classes, "world.spurious_class",
            cfg.spurious_class, f"one of the world's classes {list(classes)}")
    require(cfg.auxiliary_logits >= 0, "world.auxiliary_logits", cfg.auxiliary_logits,
            "an integer >= 0")
    if Targets(cfg.student_targets) is Targets.auxiliary:
        require(cfg.auxiliary_logits >= 2, "world.auxiliary_logits", cfg.auxiliary_logits,
                "an integer >= 2 when world.student_targets=auxiliary (a softmax needs 2)")
        require(distill.objective in AUXILIARY_OBJECTIVES, "distill.objective",
                distill.objective, "soft, reverse_kl or jsd when world.student_targets="
                "auxiliary (the student matches the teacher's auxiliary logits only)")
    require(not cfg.same_init or not student.hidden
            or tuple(student.hidden) == tuple(cfg.hidden), "student.hidden",
            list(student.hidden), "empty or equal to world.hidden when world.same_init=true "
            "(a student can only start from its teacher's initial weights at its size)")


class DigitsWorld:
    """An MLP classifier distilled generation after generation on the digits inputs."""

    metric_info = {
        "accuracy": MetricInfo(
            "test accuracy", "", "share of test images whose argmax class is the true label"),
        "nll_real": MetricInfo(
            "test cross-entropy", "nats", "mean -log q(true label | x) over the test images"),
        "prior_bias": MetricInfo(
            "prior bias towards the majority class", "",
            "|majority_share - P_true(majority)| (Taori & Hashimoto 2023): how far the share "
            "of majority labels the model gives deviates from the class's true share"),
        "majority_share": MetricInfo(
            "P_model(majority)", "",
            "mean over the training images (the inputs a student is taught on) of the "
            "probability that the model labels one as the training data's majority class "
            "at the lane's sampling settings (at temperature 0 the share of argmax "
            "predictions; with pixel noise, 8 fixed noise draws per image)"),
        "support_coverage": MetricInfo(
            "class coverage of the model's labels", "",
            "share of the world's classes among the labels the model gives the test images "
            "at the lane's sampling settings"),
        "ece": MetricInfo(
            "expected calibration error", "",
            "top-label confidence vs accuracy on the test images in 15 equal-width bins "
            "(Guo et al. 2017)"),
        "group_accuracy_gap": MetricInfo(
            "accuracy gap of the protected group", "",
            "|accuracy on the group - accuracy off it|" + FAIRNESS_NOTE),
        "demographic_parity_gap": MetricInfo(
            "demographic parity gap", "",
            "max over classes of |P(pred = c | group) - P(pred = c | not group)|"
            + FAIRNESS_NOTE),
        "equalized_odds_gap": MetricInfo(
            "equalized odds gap", "",
            "max over classes of the larger true- and false-positive-rate gap between the "
            "group and the rest (Hardt et al. 2016)" + FAIRNESS_NOTE),
        "subliminal_accuracy": MetricInfo(
            "test accuracy learned subliminally", "",
            "test accuracy of a student that saw only its teacher's auxiliary logits "
            "(world.student_targets=auxiliary; NaN otherwise and at generation 0)"),
        "agreement": MetricInfo(
            "top-1 agreement with the teacher", "",
            "share of test images where student and teacher argmax agree (NaN at "
            "generation 0, which has no teacher)"),
        "kl_teacher_student": MetricInfo(
            "KL(teacher || student)", "nats",
            "mean over test images of KL(p_teacher(.|x) || q_student(.|x)) over the classes "
            "at temperature 1 (NaN at generation 0)"),
        "teacher_nll_real": MetricInfo(
            "test cross-entropy of the teacher's defended distribution", "nats",
            "mean -log q~(true label | x) over the test images, q~ the teacher's class "
            "distribution as its defense serves it (logit_noise: one noise draw per image, "
            "over all classes whatever the exposure; none: the teacher's own) (NaN at "
            "generation 0)"),
        "teacher_nll_cost": MetricInfo(
            "cost of the defense to the teacher", "nats",
            "teacher_nll_real minus the teacher's undefended test cross-entropy (its "
            "nll_real one generation earlier) (NaN at generation 0)"),
        "params": MetricInfo(
            "parameters", "", "scalars in the classifier (without a feature projection)"),
        "train_flops": MetricInfo(
            "training FLOPs", "FLOP",
            "steps x batch x (3 x student forward [+ projection] + teacher forward when the "
            "objective queries the teacher's logits); 2 FLOPs per multiply-add"),
        "train_loss": TRAIN_LOSS_INFO,
    }
    # One wide vmap vs lax.map over batches of lanes, on 2 CPU cores (steady state after
    # compiling; teacher 64 hidden, 300 steps x 32, soft KD; best of 3): generation 0 /
    # generation 1 seconds for 64 lanes with a 16-unit student: vmap 0.46 / 0.73, map with
    # batches of 1, 4, 8: 0.61 / 0.92, 0.44 / 1.02, 0.46 / 0.96; for 256 lanes (student as
    # the teacher): vmap 1.89 / 3.06, map 2.71 / 4.80, 1.71 / 4.55, 1.55 / 3.83; 16 lanes
    # tie (0.09 / 0.17). The MLP is tiny, so one wide vmap wins where it matters.
    cpu_lane_batch = 0
    headline = ("accuracy", "agreement", "kl_teacher_student")
    retention_of = ("accuracy", "ratio")

    def __init__(self, cfg: DigitsConfig, distill: DistillConfig, sampling: SamplingConfig,
                 train_cfg: TrainConfig, student: StudentConfig,
                 exposure: ExposureConfig = ExposureConfig(),
                 defense: DefenseConfig = DefenseConfig()):
        _validate(cfg, distill, student)
        self.exposure, self.defense = exposure, defense
        classes = tuple(int(c) for c in cfg.classes) or tuple(range(CLASSES))
        images = make_images(cfg.test_fraction, cfg.split_seed, classes,
                             tuple(float(p) for p in cfg.prior), cfg.group_share,
                             cfg.spurious_class, cfg.spurious_share, cfg.pixel_noise)
        n_train = len(images.y_train)
        require(cfg.n_samples >= 0, "world.n_samples", cfg.n_samples,
                f"an integer >= 1, or 0 for {n_train} (the training split's size)")
        self.cfg, self.distill, self.sampling, self.train_cfg = cfg, distill, sampling, train_cfg
        self.n_samples, self.n_train, self.min_rows = cfg.n_samples or n_train, n_train, 1
        self.inputs, self.targets = Inputs(cfg.student_inputs), Targets(cfg.student_targets)
        activation = Activation(cfg.activation).value
        outputs = CLASSES + cfg.auxiliary_logits
        self.teacher_mlp = mlp.MLPConfig(FEATURES, outputs, tuple(cfg.hidden), activation)
        self.student_mlp = mlp.MLPConfig(FEATURES, outputs,
                                         tuple(student.hidden) or tuple(cfg.hidden), activation)
        self.x_train, self.y_train = jnp.asarray(images.x_train), jnp.asarray(images.y_train)
        self.x_test, self.y_test = jnp.asarray(images.x_test), jnp.asarray(images.y_test)
        self.group_test = jnp.asarray(images.group_test)
        self.classes = jnp.asarray(classes)
        self.noise_key, self.off_task_key = jax.random.split(jax.random.key(cfg.split_seed))
        counts = np.bincount(images.y_train, minlength=CLASSES)
        self.majority = int(np.argmax(counts))  # the true majority class and its share
        self.true_majority_share = float(counts[self.majority] / counts.sum())
        # The inputs majority_share is measured on: every training image (with pixel noise,
        # TEST_DRAWS fixed draws of each), made once.
        copies = TEST_DRAWS if cfg.pixel_noise > 0 else 1
        self.x_labelled = jax.jit(self._pixels)(jnp.arange(n_train * copies, dtype=jnp.int32))

    # ---------------------------------------------------------------- data

    def _rows(self, key: Array, n: int) -> Array:
        """n training rows: all images in order, a uniform subset of them, or (n above the
        split's size, or any n with pixel noise) images drawn with replacement, each with
        its own noise draw."""
        if self.cfg.pixel_noise > 0 or n > self.n_train:
            k_image, k_draw = jax.random.split(key)
            image = jax.random.randint(k_image, (n,), 0, self.n_train)
            return image + self.n_train * jax.random.randint(
                k_draw, (n,), 0, ROWS // self.n_train)
        if n == self.n_train:
            return jnp.arange(n)
        return jax.random.permutation(key, self.n_train)[:n]

    def _pixels(self, row_N: Array) -> Array:
        """The input each row names (see the module docstring)."""
        x_NxF = self.x_train[jnp.where(row_N >= 0, row_N % self.n_train, 0)]
        if self.cfg.pixel_noise > 0:
            noise_NxF = jax.vmap(lambda r: jax.random.normal(
                jax.random.fold_in(self.noise_key, r), (FEATURES,)))(row_N)
            x_NxF = x_NxF + self.cfg.pixel_noise * noise_NxF
        if self.inputs is Inputs.noise:
            off_task_NxF = jax.vmap(lambda r: jax.random.uniform(
                jax.random.fold_in(self.off_task_key, r), (FEATURES,), minval=-1.0))(row_N)
            x_NxF = jnp.where((row_N < 0)[:, None], off_task_NxF, x_NxF)
        return x_NxF

    def sample_real(self, key: Array, n: int) -> dict[str, Array]:
        row = self._rows(key, n)
        return {"row": row, "y": self.y_train[row % self.n_train]}

    def generate(self, key: Array, params: Classifier, n: int, dyn: Dyn) -> dict[str, Array]:
        k_rows, k_labels = jax.random.split(key)
        if self.inputs is Inputs.noise:
            row = -1 - jax.random.randint(k_rows, (n,), 0, ROWS - 1)
        else:
            row = self._rows(k_rows, n)
        logits = self._class_logits(params.weights, self._pixels(row))
        y = sampler.sample(k_labels, logits, **decoding(self.sampling, dyn))
        return {"row": row, "y": y}

    def generate_flops(self, params: Classifier) -> int:
        """FLOPs of each row ``generate`` makes: a teacher forward pass of its input."""
        return mlp.flops_per_example(mlp_config_of(params.weights,
                                                   self.teacher_mlp.activation))

    # ---------------------------------------------------------------- model

    def _class_logits(self, weights: Params, x_NxF: Array) -> Array:
        cfg = mlp_config_of(weights, self.teacher_mlp.activation)
        return mlp.apply(weights, x_NxF, cfg)[0][:, :CLASSES]

    def fit(self, key: Array, data: dict[str, Array], weights_N: Array, dyn: Dyn,
            teacher: Classifier | None) -> Classifier:
        k_init, k_proj, k_train = jax.random.split(key, 3)
        t = self.train_cfg
        if teacher is None:  # generation 0: cross-entropy on the true labels
            def loss_fn(p: Params, batch: dict[str, Array]) -> Array:
                logits, _ = mlp.apply(p, self._pixels(batch["row"]), self.teacher_mlp)
                return OBJECTIVES["hard"](Student(logits[:, :CLASSES]),
                                          Teacher(labels=batch["y"]), LossHParams())
            init = mlp.init(k_init, self.teacher_mlp)
            weights, losses_S = train(k_train, init, loss_fn, data, weights_N, t.steps,
                                      t.batch_size, optimizer_for(t, dyn))
            return Classifier(weights, init if self.cfg.same_init else None,
                              final_loss(losses_S))

        objective = self.distill.objective
        name, hp = loss_name(self.distill), loss_hparams(dyn)
        cfg = self.student_mlp
        teacher_cfg = mlp_config_of(teacher.weights, cfg.activation)
        # The outputs the student is shown: the class logits, or only the auxiliary ones.
        shown = slice(CLASSES, None) if self.targets is Targets.auxiliary else slice(CLASSES)

        def loss_fn(p: dict[str, Params], batch: dict[str, Array],
                    key: Array | None = None) -> Array:
            x = self._pixels(batch["row"])
            logits, hidden = mlp.apply(p["mlp"], x, cfg)
            t_logits = t_hidden = topk_lp = topk_idx = None
            if objective in QUERIES_TEACHER:
                t_logits, t_hidden = mlp.apply(teacher.weights, x, teacher_cfg)
                t_logits, t_hidden = jax.lax.stop_gradient((t_logits[:, shown], t_hidden))
                t_logits = expose(key, t_logits, self.exposure, self.defense,
                                  strength(self.defense, dyn, "noise_scale"))
            if objective is Objective.topk:
                topk_lp, topk_idx = teacher_topk(t_logits, self.distill.top_k)
            labels = None if self.targets is Targets.auxiliary else batch["y"]
            return OBJECTIVES[name](
                Student(logits[:, shown], hidden, p.get("projection")),
                Teacher(labels, t_logits, topk_lp, topk_idx, t_hidden), hp)

        init = teacher.init if self.cfg.same_init else mlp.init(k_init, cfg)
        p = {"mlp": init}
        if objective is Objective.feature:
            p["projection"] = init_projection(k_proj, cfg.hidden_width,
                                              teacher_cfg.hidden_width)
        p, losses_S = train(k_train, p, loss_fn, data, weights_N, t.steps, t.batch_size,
                            optimizer_for(t, dyn), loss_takes_key=noisy(self.defense))
        return Classifier(p["mlp"], teacher.init, final_loss(losses_S))

    # ---------------------------------------------------------------- metrics

    def train_flops(self, cfg: mlp.MLPConfig, teacher_cfg: mlp.MLPConfig | None) -> float:
        """Training FLOPs of one generation (see ``metric_info``)."""
        per_example = mlp.train_flops_per_example(cfg)
        if teacher_cfg is not None and self.distill.objective in QUERIES_TEACHER:
            per_example += mlp.flops_per_example(teacher_cfg)
        if teacher_cfg is not None and self.distill.objective is Objective.feature:
            per_example += 3 * 2 * cfg.hidden_width * teacher_cfg.hidden_width
        return float(self.train_cfg.steps * self.train_cfg.batch_size * per_example)

    def untaught_metrics(self, params: Classifier) -> dict[str, Array]:
        """The metrics that need a teacher, for a model that learnt from none: NaN, and the
        training FLOPs without a teacher's."""
        nan = jnp.float32(jnp.nan)
        cfg = mlp_config_of(params.weights, self.teacher_mlp.activation)
        return {**dict.fromkeys(("agreement", "kl_teacher_student", "teacher_nll_real",
                                 "teacher_nll_cost", "subliminal_accuracy"), nan),
                "train_flops": jnp.float32(self.train_flops(cfg, None))}

    def measure(self, key: Array, params: Classifier, teacher: Classifier | None,
                dyn: Dyn | None = None) -> dict[str, Array]:
        if teacher is None:
            return measure_untaught(self, key, params, dyn)
        cfg = mlp_config_of(params.weights, self.teacher_mlp.activation)
        logits = self._class_logits(params.weights, self.x_test)
        probs = jax.nn.softmax(logits)
        nan = jnp.float32(jnp.nan)
        teacher_cfg = mlp_config_of(teacher.weights, cfg.activation)
        t_logits = self._class_logits(teacher.weights, self.x_test)
        agreement = classification.agreement(t_logits, logits)
        kl_ts = jnp.mean(kl(jax.nn.log_softmax(t_logits), jax.nn.log_softmax(logits)))
        served = expose(jax.random.fold_in(key, 1), t_logits, ExposureConfig(),
                        self.defense, strength(self.defense, dyn, "noise_scale"))
        teacher_nll = jnp.mean(cross_entropy(served, self.y_test))
        teacher_cost = teacher_nll - jnp.mean(cross_entropy(t_logits, self.y_test))
        subliminal = (classification.accuracy(logits, self.y_test)
                      if self.targets is Targets.auxiliary else nan)
        settings = decoding(self.sampling, dyn)
        # The share of majority labels this model gives its student's training inputs.
        majority_share = jnp.mean(sampler.probabilities(
            self._class_logits(params.weights, self.x_labelled), **settings)[:, self.majority])
        labels = sampler.sample(key, logits, **settings)
        fairness = {"group_accuracy_gap": nan, "demographic_parity_gap": nan,
                    "equalized_odds_gap": nan}
        if self.cfg.group_share > 0:
            fairness = {
                "group_accuracy_gap": classification.group_accuracy_gap(
                    probs, self.y_test, self.group_test),
                "demographic_parity_gap": classification.demographic_parity_gap(
                    probs, self.group_test),
                "equalized_odds_gap": classification.equalized_odds_gap(
                    probs, self.y_test, self.group_test)}
        metrics = {
            "accuracy": classification.accuracy(logits, self.y_test),
            "nll_real": jnp.mean(cross_entropy(logits, self.y_test)),
            "prior_bias": jnp.abs(majority_share - self.true_majority_share),
            "majority_share": majority_share,
            "support_coverage": jnp.mean(jnp.any(labels[:, None] == self.classes, axis=0)),
            "ece": classification.ece(probs, self.y_test),
            **fairness,
            "subliminal_accuracy": subliminal,
            "agreement": agreement,
            "kl_teacher_student": kl_ts,
            "teacher_nll_real": teacher_nll,
            "teacher_nll_cost": teacher_cost,
            "params": mlp.param_count(params.weights),
            "train_flops": self.train_flops(cfg, teacher_cfg),
            "train_loss": params.train_loss,
        }
        return {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
