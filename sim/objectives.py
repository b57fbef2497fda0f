"""Distillation objectives between a teacher's output and a student's logits.

All losses are pure, jit-able and differentiable in the student. They are computed per
position (every axis but the last, vocab, one) and averaged, with optional per-example
weights of the leading shape (broadcast over trailing position axes, e.g. ``weights_N``
against ``logits_NxLxV``). Hyperparameters (``alpha``, ``tau``, ``beta``, ``gamma``) may
be traced scalars. Teacher inputs are treated as constants (``stop_gradient``).

Notation: P = teacher distribution, Q = student distribution, KL(A||B) = sum A log(A/B).

* ``hard``: cross-entropy of the student on teacher-sampled labels.
* ``soft`` (Hinton KD): alpha * CE(labels) + (1 - alpha) * tau^2 * KL(P_tau || Q_tau).
* ``topk``: only the teacher's top-k log-probs are visible; the target is the teacher on
  those k tokens and, for the rest, either nothing (``missing="renormalise"``: the k
  probabilities are renormalised) or the left-over mass spread uniformly over the other
  V - k tokens (``missing="uniform"``). Loss = KL(target || Q); its minimum 0 is at
  Q = target.
* ``reverse_kl``: KL(Q || P).
* ``jsd``: the generalised Jensen-Shannon divergence, normalised to be continuous in beta:

      D_beta(P, Q) = [beta KL(P||M) + (1-beta) KL(Q||M)] / (beta (1-beta)),
      M = beta P + (1-beta) Q,

  with D_0 = KL(P||Q) (forward KL) and D_1 = KL(Q||P) (reverse KL): these are the limits
  of the quotient as beta -> 0 and beta -> 1, so D_beta is continuous on [0, 1]
  (D_1/2 = 4 JS). The unnormalised form used by the GKD paper's code
  (beta KL(P||M) + (1-beta) KL(Q||M), with KL(P||Q) / KL(Q||P) substituted at the ends)
  tends to 0 at both ends and so jumps there. The KLs to the mixture are evaluated in a
  cancellation-free form so that beta = 1e-4 agrees with beta = 0 to ~1e-4 relative.
* ``feature`` (FitNets): ``soft`` + gamma * MSE(hidden_student @ W + b, hidden_teacher),
  with the projection (W, b) a learned part of the student's parameters.

The public functions are jitted (``k``, ``vocab`` and ``missing`` static); they nest
inside other transforms as usual.

``OBJECTIVES`` maps names to functions with one signature,
``fn(student: Student, teacher: Teacher, hp: LossHParams, weights=None) -> scalar``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Params = Any
Scalar = Array | float


# ---------------------------------------------------------------- weighting and KL helpers


def weighted_mean(per_position_x: Array, weights: Array | None = None) -> Array:
    """Mean over all entries; with weights of leading shape, sum(w l) / sum(w) (0 if all w
    are 0). Positions with weight 0 contribute exactly 0 even where the loss is inf/NaN."""
    if weights is None:
        return jnp.mean(per_position_x)
    w = jnp.asarray(weights, jnp.float32)
    w = w.reshape(w.shape + (1,) * (per_position_x.ndim - w.ndim))
    w = jnp.broadcast_to(w, per_position_x.shape)
    total = jnp.sum(jnp.where(w != 0, w * per_position_x, 0.0))
    return total / jnp.maximum(jnp.sum(w), 1e-30)


def _kl_to_mixture(log_a_xV: Array, log_b_xV: Array, lam: Scalar, log_rest: Scalar
                   ) -> Array:
    """KL(A || (1-lam) A + lam B) per position, shape ``[...]``, for lam in (0, 1], given
    ``log_rest = log(1 - lam)`` computed accurately by the caller (1 - lam may be far
    below float32 resolution near 1, e.g. lam = 1 - beta with beta = 1e-8).

    Written as sum_v [lam (B - A) - A log1p(u)], u = lam (B/A - 1) (the first part sums
    to 0), i.e. sum_v A (u - log1p(u)): every term is >= 0 and, for small u, evaluated by a
    series, so no catastrophic cancellation when A ~ M (small lam or A ~ B). Tokens with
    A = 0 contribute lam * B. ``lam = 1`` gives KL(A||B).
    """
    lam, log_rest = jnp.asarray(lam, jnp.float32), jnp.asarray(log_rest, jnp.float32)
    a_xV, b_xV = jnp.exp(log_a_xV), jnp.exp(log_b_xV)
    a_pos = log_a_xV > -jnp.inf
    # +inf only for lam = 1 and B = 0 < A. Substituting safe values there (and where A = 0)
    # keeps the unselected branches, and so the gradients, free of NaNs.
    infinite = a_pos & (log_b_xV == -jnp.inf) & (log_rest == -jnp.inf)
    d_xV = jnp.where(a_pos & ~infinite, log_b_xV - log_a_xV, 0.0)  # log(B/A)
    u_xV = lam * jnp.expm1(jnp.minimum(d_xV, 80.0))
    # log1p(u) = log(1 - lam + lam B/A): directly while 1 + u is not small (u accurate to
    # ~eps, so 1 + u is accurate relative to itself), else in log space (no overflow for
    # large d, no cancellation when lam B/A and 1 - lam are both tiny).
    direct = (u_xV > -0.5) & (d_xV < 80.0)
    log_mix = jnp.logaddexp(log_rest, jnp.log(lam) + jnp.where(direct, 0.0, d_xV))
    log1p_u = jnp.where(direct, jnp.log1p(jnp.where(direct, u_xV, 0.0)), log_mix)
    small_u = jnp.abs(u_xV) < 1e-2
    u_s = jnp.where(small_u, u_xV, 0.0)
    series = u_s * u_s * (0.5 - u_s * (1.0 / 3.0 - u_s * (0.25 - u_s * 0.2)))
    term_xV = jnp.where(small_u, a_xV * series, lam * (b_xV - a_xV) - a_xV * log1p_u)
    term_xV = jnp.where(a_pos, jnp.where(infinite, jnp.inf, term_xV), lam * b_xV)
    return jnp.sum(term_xV, axis=-1)


@jax.jit
def kl(log_p_xV: Array, log_q_xV: Array) -> Array:
    """KL(P||Q) per position from log-probabilities (every summand >= 0)."""
    return _kl_to_mixture(log_p_xV, log_q_xV, 1.0, -jnp.inf)


@jax.jit
def jsd_divergence(log_p_xV: Array, log_q_xV: Array, beta: Scalar) -> Array:
    """Continuous generalised JSD D_beta(P, Q) per position (see module docstring):
    KL(P||Q) at beta = 0, KL(Q||P) at beta = 1. ``beta`` may be traced; the gradient in
    the logits is finite for every beta in [0, 1]."""
    beta = jnp.asarray(beta, jnp.float32)
    b = jnp.clip(beta, 1e-12, 1.0 - 1e-7)
    # beta KL(P||M) / (beta (1-beta)) with M = P + (1-beta)(Q - P), and symmetrically.
    mixed = (_kl_to_mixture(log_p_xV, log_q_xV, 1.0 - b, jnp.log(b)) / (1.0 - b)
             + _kl_to_mixture(log_q_xV, log_p_xV, b, jnp.log1p(-b)) / b)
    return jnp.where(beta <= 0.0, kl(log_p_xV, log_q_xV),
                     jnp.where(beta >= 1.0, kl(log_q_xV, log_p_xV), mixed))


def _log_softmax(logits_xV: Array, tau: Scalar = 1.0) -> Array:
    return jax.nn.log_softmax(jnp.asarray(logits_xV, jnp.float32) / tau, axis=-1)


def _const(x: Array) -> Array:
    return jax.lax.stop_gradient(jnp.asarray(x))


@jax.jit
def cross_entropy(student_logits_xV: Array, labels_x: Array) -> Array:
    """-log Q(label) per position."""
    log_q = _log_softmax(student_logits_xV)
    return -jnp.take_along_axis(log_q, _const(labels_x).astype(jnp.int32)[..., None],
                                axis=-1)[..., 0]


# ---------------------------------------------------------------- losses


@jax.jit
def hard(student_logits_xV: Array, labels_x: Array, weights: Array | None = None) -> Array:
    """Cross-entropy on teacher-sampled tokens/labels."""
    return weighted_mean(cross_entropy(student_logits_xV, labels_x), weights)


@jax.jit
def soft(student_logits_xV: Array, teacher_logits_xV: Array, labels_x: Array | None,
         alpha: Scalar = 0.0, tau: Scalar = 1.0, weights: Array | None = None) -> Array:
    """Hinton KD: alpha CE(labels) + (1-alpha) tau^2 KL(P_tau || Q_tau).

    ``labels_x=None`` drops the CE term (only the KL part, still scaled by 1-alpha)."""
    per_pos = (1.0 - alpha) * tau**2 * kl(_log_softmax(_const(teacher_logits_xV), tau),
                                          _log_softmax(student_logits_xV, tau))
    if labels_x is not None:
        per_pos = per_pos + alpha * cross_entropy(student_logits_xV, labels_x)
    return weighted_mean(per_pos, weights)


@functools.partial(jax.jit, static_argnames="k")
def teacher_topk(teacher_logits_xV: Array, k: int) -> tuple[Array, Array]:
    """What a top-k teacher exposes: ``(logprobs_xK, indices_xK)``, most likely first,
    log-probabilities under the teacher's full distribution."""
    return jax.lax.top_k(_log_softmax(teacher_logits_xV), k)


@functools.partial(jax.jit, static_argnames=("vocab", "missing"))
def topk_target(topk_logprobs_xK: Array, topk_indices_xK: Array, vocab: int,
                missing: Literal["renormalise", "uniform"] = "renormalise") -> Array:
    """Log-probabilities ``[..., V]`` of the distillation target built from the top k."""
    k = topk_logprobs_xK.shape[-1]
    lp_xK = jnp.asarray(topk_logprobs_xK, jnp.float32)
    mass_x1 = jax.nn.logsumexp(lp_xK, axis=-1, keepdims=True)
    if missing == "renormalise" or k >= vocab:
        values_xK, fill_x1 = lp_xK - mass_x1, jnp.full(mass_x1.shape, -jnp.inf)
    elif missing == "uniform":
        rest_x1 = jnp.maximum(-jnp.expm1(jnp.minimum(mass_x1, 0.0)), 0.0)
        values_xK, fill_x1 = lp_xK, jnp.log(rest_x1 / (vocab - k))
    else:
        raise ValueError(f"missing={missing!r}: 'renormalise' or 'uniform'")
    lead = lp_xK.shape[:-1]
    rows = math.prod(lead)
    base_RxV = jnp.broadcast_to(fill_x1, lead + (vocab,)).reshape(rows, vocab)
    target_RxV = base_RxV.at[jnp.arange(rows)[:, None],
                             jnp.asarray(topk_indices_xK, jnp.int32).reshape(rows, k)].set(
                                 values_xK.reshape(rows, k))
    return target_RxV.reshape(lead + (vocab,))


@functools.partial(jax.jit, static_argnames="missing")
def topk(student_logits_xV: Array, topk_logprobs_xK: Array, topk_indices_xK: Array,
         missing: Literal["renormalise", "uniform"] = "renormalise",
         weights: Array | None = None) -> Array:
    """KL(target || Q) with the target from the teacher's visible top-k log-probs."""
    vocab = student_logits_xV.shape[-1]
    log_t = topk_target(_const(topk_logprobs_xK), _const(topk_indices_xK), vocab, missing)
    return weighted_mean(kl(log_t, _log_softmax(student_logits_xV)), weights)


@jax.jit
def reverse_kl(student_logits_xV: Array, teacher_logits_xV: Array,
               weights: Array | None = None) -> Array:
    """KL(Q || P) (mode-seeking)."""
    return weighted_mean(kl(_log_softmax(student_logits_xV),
                            _log_softmax(_const(teacher_logits_xV))), weights)


@jax.jit
def jsd(student_logits_xV: Array, teacher_logits_xV: Array, beta: Scalar = 0.5,
        weights: Array | None = None) -> Array:
    """Normalised generalised JSD D_beta(P=teacher, Q=student): forward KL at beta=0,
    reverse KL at beta=1, continuous in between."""
    return weighted_mean(jsd_divergence(_log_softmax(_const(teacher_logits_xV)),
                                        _log_softmax(student_logits_xV), beta), weights)


def init_projection(key: Array, student_width: int, teacher_width: int) -> Params:
    """FitNets regressor W (Hs x Ht, scaled normal) and bias b (zeros)."""
    kernel = jax.random.normal(key, (student_width, teacher_width)) / jnp.sqrt(student_width)
    return {"kernel": kernel, "bias": jnp.zeros((teacher_width,), jnp.float32)}


@jax.jit
def feature_mse(student_hidden_xHs: Array, projection: Params, teacher_hidden_xHt: Array,
                weights: Array | None = None) -> Array:
    """Mean over features of (h_s W + b - h_t)^2, then the weighted mean over positions."""
    mapped = student_hidden_xHs @ projection["kernel"] + projection["bias"]
    return weighted_mean(jnp.mean((mapped - _const(teacher_hidden_xHt)) ** 2, axis=-1),
                         weights)


@jax.jit
def feature(student_logits_xV: Array, student_hidden_xHs: Array, projection: Params,
            teacher_hidden_xHt: Array, teacher_logits_xV: Array, labels_x: Array | None,
            alpha: Scalar = 0.0, tau: Scalar = 1.0, gamma: Scalar = 1.0,
            weights: Array | None = None) -> Array:
    """FitNets: ``soft`` output loss + gamma * ``feature_mse``."""
    return (soft(student_logits_xV, teacher_logits_xV, labels_x, alpha, tau, weights)
            + gamma * feature_mse(student_hidden_xHs, projection, teacher_hidden_xHt,
                                  weights))


# ---------------------------------------------------------------- uniform interface


class Teacher(NamedTuple):
    """What the teacher exposes (fields an objective does not use may be None)."""

    labels: Array | None = None  # int [...]: sampled tokens / labels
    logits: Array | None = None  # [..., V]
    topk_logprobs: Array | None = None  # [..., k]
    topk_indices: Array | None = None  # int [..., k]
    hidden: Array | None = None  # [..., Ht]


class Student(NamedTuple):
    logits: Array  # [..., V]
    hidden: Array | None = None  # [..., Hs]
    projection: Params | None = None  # {"kernel": Hs x Ht, "bias": Ht}


class LossHParams(NamedTuple):
    """Loss hyperparameters; each may be a traced scalar."""

    alpha: Scalar = 0.0  # weight of the hard-label CE in soft/feature
    tau: Scalar = 1.0  # KD temperature in soft/feature
    beta: Scalar = 0.5  # JSD interpolation (0 forward KL, 1 reverse KL)
    gamma: Scalar = 1.0  # weight of the feature MSE


Objective = Callable[[Student, Teacher, LossHParams, Array | None], Array]

OBJECTIVES: dict[str, Objective] = {
    "hard": lambda s, t, hp, w=None: hard(s.logits, t.labels, w),
    "soft": lambda s, t, hp, w=None: soft(s.logits, t.logits, t.labels, hp.alpha, hp.tau, w),
    "topk": lambda s, t, hp, w=None: topk(s.logits, t.topk_logprobs, t.topk_indices,
                                          "renormalise", w),
    "topk_uniform": lambda s, t, hp, w=None: topk(s.logits, t.topk_logprobs,
                                                  t.topk_indices, "uniform", w),
    "reverse_kl": lambda s, t, hp, w=None: reverse_kl(s.logits, t.logits, w),
    "jsd": lambda s, t, hp, w=None: jsd(s.logits, t.logits, hp.beta, w),
    "feature": lambda s, t, hp, w=None: feature(s.logits, s.hidden, s.projection, t.hidden,
                                                t.logits, t.labels, hp.alpha, hp.tau,
                                                hp.gamma, w),
}
