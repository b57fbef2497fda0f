"""Iterative distillation of an MLP classifier on scikit-learn's handwritten digits.

Real data are the 1797 8x8 images of ``sklearn.datasets.load_digits`` (bundled, no
download), pixels scaled to [0, 1], split once into train and test inputs by
``world.split_seed``. Generation 0 (the first teacher) is an MLP trained with cross-entropy
on the true labels of ``n_samples`` training inputs (all of them by default, else a uniform
subset drawn afresh for every call). Generation g >= 1 is a student (of ``student.hidden``
size, or the teacher's) trained on ``n_samples`` training inputs labelled by generation
g - 1: ``generate`` samples one label per input from the teacher at the traced
sampling settings (temperature 0 = its argmax), and objectives other than ``hard`` also
query the teacher's logits (and, for ``feature``, its last hidden layer) on every minibatch.

The student only ever sees the real training inputs, never inputs of its own, so the
``on_policy`` objective has nothing to act on and is rejected.

Data is ``{"row": int32 [N], "y": int32 [N]}``: the index of a training input and its label.
Every lane shares the inputs, so accumulated pools hold indices, not pixels. The model is a
plain MLP params pytree.
The ``feature`` objective's learned projection (student hidden -> teacher hidden) is
trained with the student and then dropped: it only maps onto this generation's teacher.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sim import sampling as decoding
from sim.distill import (DistillConfig, Objective, SamplingConfig, StudentConfig, TrainConfig,
                         loss_hparams, loss_name)
from sim.errors import require
from sim.metrics import classification
from sim.models import mlp
from sim.objectives import (OBJECTIVES, LossHParams, Student, Teacher, cross_entropy,
                            init_projection, kl, teacher_topk)
from sim.train import optimizer_for, train
from sim.worlds.base import Array, Dyn, MetricInfo, Params, WorldConfig

FEATURES = 64  # 8 x 8 pixels
CLASSES = 10
TOTAL = 1797  # images in load_digits


class Activation(str, enum.Enum):
    relu = "relu"
    gelu = "gelu"
    tanh = "tanh"


@dataclass(frozen=True)
class DigitsConfig(WorldConfig):
    n_samples: int = 0  # training inputs per generation (0 = the whole training split)
    test_fraction: float = 0.3  # share of the 1797 images held out for the metrics
    split_seed: int = 0  # the fixed train/test split
    hidden: tuple[int, ...] = (64,)  # the teacher's MLP hidden sizes (student.hidden overrides)
    activation: Activation = Activation.relu
    classes: tuple[int, ...] = ()  # keep only these digits (empty = all ten)
    prior: tuple[float, ...] = ()  # class shares of the kept images (empty = as loaded)


def load_split(test_fraction: float, split_seed: int) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)``: pixels in [0, 1], a stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=split_seed, stratify=y)
    return x_train, y_train, x_test, y_test


def skew(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...], prior: tuple[float, ...],
         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the images of ``classes`` and subsample them to the class shares ``prior``:
    as many images as the scarcest class allows, the same shares in every split."""
    keep = np.isin(y, classes)
    x, y = x[keep], y[keep]
    if not prior:
        return x, y
    shares = np.asarray(prior, np.float64) / sum(prior)
    available = np.array([(y == c).sum() for c in classes])
    total = int(np.floor(np.min(available / shares)))
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(y == c), int(round(s * total)),
                                      replace=False) for c, s in zip(classes, shares)])
    rows = np.sort(rows)
    return x[rows], y[rows]


def mlp_config_of(params: Params, activation: str) -> mlp.MLPConfig:
    """The architecture of a params pytree (shapes are static under jit and vmap)."""
    depth = sum(1 for name in params if name.startswith("dense_"))
    hidden = tuple(int(params[f"dense_{i}"]["kernel"].shape[-1]) for i in range(depth))
    return mlp.MLPConfig(FEATURES, CLASSES, hidden, activation)


# Objectives whose loss needs the teacher's logits (or hidden state) on each minibatch.
QUERIES_TEACHER = frozenset({Objective.soft, Objective.topk, Objective.reverse_kl,
                             Objective.jsd, Objective.feature})


class DigitsWorld:
    """An MLP classifier distilled generation after generation on the digits inputs."""

    metric_info = {
        "accuracy": MetricInfo(
            "test accuracy", "", "share of test images whose argmax class is the true label"),
        "nll_real": MetricInfo(
            "test cross-entropy", "nats", "mean -log q(true label | x) over the test images"),
        "prior_bias": MetricInfo(
            "prior bias towards the majority class", "",
            "|P_model(majority) - P_true(majority)|: share of test images predicted as the "
            "training data's majority class minus its true share (Taori & Hashimoto 2023)"),
        "ece": MetricInfo(
            "expected calibration error", "",
            "top-label confidence vs accuracy on the test images in 15 equal-width bins "
            "(Guo et al. 2017)"),
        "agreement": MetricInfo(
            "top-1 agreement with the teacher", "",
            "share of test images where student and teacher argmax agree (NaN at "
            "generation 0, which has no teacher)"),
        "kl_teacher_student": MetricInfo(
            "KL(teacher || student)", "nats",
            "mean over test images of KL(p_teacher(.|x) || q_student(.|x)) at temperature 1 "
            "(NaN at generation 0)"),
        "params": MetricInfo(
            "parameters", "", "scalars in the classifier (without a feature projection)"),
        "train_flops": MetricInfo(
            "training FLOPs", "FLOP",
            "steps x batch x (3 x student forward [+ projection] + teacher forward when the "
            "objective queries the teacher's logits); 2 FLOPs per multiply-add"),
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
                 train_cfg: TrainConfig, student: StudentConfig):
        n_test = math.ceil(cfg.test_fraction * TOTAL) if 0 < cfg.test_fraction < 1 else 0
        require(CLASSES <= n_test <= TOTAL - CLASSES, "world.test_fraction", cfg.test_fraction,
                f"a fraction in (0, 1) leaving at least {CLASSES} test and {CLASSES} training "
                f"images of the {TOTAL} (one per class)")
        hidden = tuple(cfg.hidden)
        require(all(h >= 1 for h in hidden), "world.hidden", list(hidden),
                "positive hidden layer sizes (empty = a linear classifier)")
        require(isinstance(cfg.activation, Activation) or cfg.activation in
                {a.value for a in Activation}, "world.activation", cfg.activation,
                "one of " + ", ".join(a.value for a in Activation))
        require(distill.objective is not Objective.on_policy, "distill.objective",
                distill.objective, "in the digits world the student never produces inputs "
                "(only the teacher labels the fixed training images), so on-policy "
                "distillation has nothing to score; use hard, soft, topk, reverse_kl, jsd "
                "or feature")
        classes = tuple(int(c) for c in cfg.classes) or tuple(range(CLASSES))
        prior = tuple(float(p) for p in cfg.prior)
        require(len(set(classes)) == len(classes) >= 2
                and all(0 <= c < CLASSES for c in classes), "world.classes", list(classes),
                "two or more distinct digits in [0, 9], or empty for all ten")
        require(not prior or (len(prior) == len(classes) and all(p > 0 for p in prior)),
                "world.prior", list(prior),
                f"empty, or {len(classes)} positive class shares (one per world.classes)")
        x_train, y_train, x_test, y_test = load_split(cfg.test_fraction, cfg.split_seed)
        x_train, y_train = skew(x_train, y_train, classes, prior, cfg.split_seed)
        x_test, y_test = skew(x_test, y_test, classes, prior, cfg.split_seed + 1)
        n_train = len(y_train)
        n = cfg.n_samples or n_train
        require(0 <= cfg.n_samples <= n_train, "world.n_samples", cfg.n_samples,
                f"an integer in [1, {n_train}] (the training split's size), or 0 for all")
        require(distill.objective is not Objective.topk or distill.top_k <= CLASSES,
                "distill.top_k", distill.top_k,
                f"an integer in [1, {CLASSES}] (the digits world has {CLASSES} classes)")
        self.cfg, self.distill, self.sampling, self.train_cfg = cfg, distill, sampling, train_cfg
        self.n_samples, self.n_train, self.min_rows = n, n_train, 1
        activation = Activation(cfg.activation).value
        self.teacher_mlp = mlp.MLPConfig(FEATURES, CLASSES, hidden, activation)
        self.student_mlp = mlp.MLPConfig(FEATURES, CLASSES, tuple(student.hidden) or hidden,
                                         activation)
        self.x_train, self.y_train = jnp.asarray(x_train), jnp.asarray(y_train)
        self.x_test, self.y_test = jnp.asarray(x_test), jnp.asarray(y_test)
        counts = np.bincount(y_train, minlength=CLASSES)
        self.majority = int(np.argmax(counts))  # the true majority class and its share
        self.majority_share = float(counts[self.majority] / counts.sum())

    # ---------------------------------------------------------------- data

    def _inputs(self, key: Array, n: int) -> Array:
        """Indices of n training inputs: all of them in order, else a uniform subset."""
        if n == self.n_train:
            return jnp.arange(n)
        return jax.random.permutation(key, self.n_train)[:n]

    def sample_real(self, key: Array, n: int) -> dict[str, Array]:
        idx = self._inputs(key, n)
        return {"row": idx, "y": self.y_train[idx]}

    def generate(self, key: Array, params: Params, n: int, dyn: Dyn) -> dict[str, Array]:
        k_inputs, k_labels = jax.random.split(key)
        idx = self._inputs(k_inputs, n)
        logits, _ = self._apply(params, self.x_train[idx])
        y = decoding.sample(k_labels, logits, dyn["sampling.temperature"],
                            self.sampling.top_k, dyn["sampling.top_p"], dyn["sampling.min_p"])
        return {"row": idx, "y": y}

    # ---------------------------------------------------------------- model

    def _apply(self, params: Params, x: Array) -> tuple[Array, Array]:
        return mlp.apply(params, x, mlp_config_of(params, self.teacher_mlp.activation))

    def fit(self, key: Array, data: dict[str, Array], weights_N: Array, dyn: Dyn,
            teacher: Params | None) -> Params:
        k_init, k_proj, k_train = jax.random.split(key, 3)
        t = self.train_cfg
        if teacher is None:  # generation 0: cross-entropy on the true labels
            def loss_fn(p: Params, batch: dict[str, Array]) -> Array:
                logits, _ = mlp.apply(p, self.x_train[batch["row"]], self.teacher_mlp)
                return OBJECTIVES["hard"](Student(logits), Teacher(labels=batch["y"]),
                                          LossHParams())
            params = mlp.init(k_init, self.teacher_mlp)
            params, _ = train(k_train, params, loss_fn, data, weights_N, t.steps,
                              t.batch_size, optimizer_for(t, dyn))
            return params

        objective = self.distill.objective
        name, hp = loss_name(self.distill), loss_hparams(dyn)
        cfg = self.student_mlp
        teacher_cfg = mlp_config_of(teacher, cfg.activation)

        def loss_fn(p: dict[str, Params], batch: dict[str, Array]) -> Array:
            x = self.x_train[batch["row"]]
            logits, hidden = mlp.apply(p["mlp"], x, cfg)
            t_logits = t_hidden = topk_lp = topk_idx = None
            if objective in QUERIES_TEACHER:
                t_logits, t_hidden = mlp.apply(teacher, x, teacher_cfg)
                t_logits, t_hidden = jax.lax.stop_gradient((t_logits, t_hidden))
            if objective is Objective.topk:
                topk_lp, topk_idx = teacher_topk(t_logits, self.distill.top_k)
            return OBJECTIVES[name](
                Student(logits, hidden, p.get("projection")),
                Teacher(batch["y"], t_logits, topk_lp, topk_idx, t_hidden), hp)

        p = {"mlp": mlp.init(k_init, cfg)}
        if objective is Objective.feature:
            p["projection"] = init_projection(k_proj, cfg.hidden_width,
                                              teacher_cfg.hidden_width)
        p, _ = train(k_train, p, loss_fn, data, weights_N, t.steps, t.batch_size,
                     optimizer_for(t, dyn))
        return p["mlp"]

    # ---------------------------------------------------------------- metrics

    def train_flops(self, cfg: mlp.MLPConfig, teacher_cfg: mlp.MLPConfig | None) -> float:
        """Training FLOPs of one generation (see ``metric_info``)."""
        per_example = mlp.train_flops_per_example(cfg)
        if teacher_cfg is not None and self.distill.objective in QUERIES_TEACHER:
            per_example += mlp.flops_per_example(teacher_cfg)
        if teacher_cfg is not None and self.distill.objective is Objective.feature:
            per_example += 3 * 2 * cfg.hidden_width * teacher_cfg.hidden_width
        return float(self.train_cfg.steps * self.train_cfg.batch_size * per_example)

    def measure(self, key: Array, params: Params, teacher: Params | None,
                dyn: Dyn | None = None) -> dict[str, Array]:
        del key, dyn
        cfg = mlp_config_of(params, self.teacher_mlp.activation)
        logits, _ = mlp.apply(params, self.x_test, cfg)
        log_q = jax.nn.log_softmax(logits)
        nan = jnp.float32(jnp.nan)
        agreement = kl_ts = nan
        teacher_cfg = None
        if teacher is not None:
            teacher_cfg = mlp_config_of(teacher, cfg.activation)
            t_logits, _ = mlp.apply(teacher, self.x_test, teacher_cfg)
            agreement = classification.agreement(t_logits, logits)
            kl_ts = jnp.mean(kl(jax.nn.log_softmax(t_logits), log_q))
        return {
            "accuracy": classification.accuracy(logits, self.y_test).astype(jnp.float32),
            "nll_real": jnp.mean(cross_entropy(logits, self.y_test)),
            "ece": classification.ece(jnp.exp(log_q), self.y_test),
            "prior_bias": jnp.abs(jnp.mean(jnp.argmax(logits, -1) == self.majority)
                                  - self.majority_share),
            "agreement": jnp.asarray(agreement, jnp.float32),
            "kl_teacher_student": jnp.asarray(kl_ts, jnp.float32),
            "params": jnp.float32(mlp.param_count(params)),
            "train_flops": jnp.float32(self.train_flops(cfg, teacher_cfg)),
        }
