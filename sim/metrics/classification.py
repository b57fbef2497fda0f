"""Classifier quality, calibration and group fairness, from predicted probabilities.

Shapes: N examples, C classes; ``group_N`` is a boolean membership of a protected group.
Multi-class fairness gaps are the largest gap over classes (one-vs-rest), so that they
reduce to the usual binary definitions when C = 2 up to the choice of positive class. A
class whose rate is undefined in one of the two groups (no members) is left out of the
maximum; a gap is NaN only when no class defines it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def accuracy(probs_NxC: Array, labels_N: Array) -> Array:
    """Share of top-1 predictions equal to the label (logits work as well as probs)."""
    return jnp.mean(jnp.argmax(probs_NxC, -1) == labels_N)


def agreement(probs_a_NxC: Array, probs_b_NxC: Array) -> Array:
    """Share of examples (any leading shape) where two models' top-1 predictions agree;
    logits work as well as probabilities."""
    return jnp.mean(jnp.argmax(probs_a_NxC, -1) == jnp.argmax(probs_b_NxC, -1))


def ece(probs_NxC: Array, labels_N: Array, bins: int = 15) -> Array:
    """Expected calibration error (Guo et al. 2017): top-label confidence in equal-width
    bins; sum over bins of |accuracy - confidence| weighted by the bin's share."""
    confidence_N = jnp.max(probs_NxC, -1)
    correct_N = (jnp.argmax(probs_NxC, -1) == labels_N).astype(jnp.float32)
    bin_N = jnp.clip(jnp.ceil(confidence_N * bins).astype(jnp.int32) - 1, 0, bins - 1)
    gap_B = jax.ops.segment_sum(correct_N - confidence_N, bin_N, bins)
    return jnp.sum(jnp.abs(gap_B)) / confidence_N.shape[0]


def _rate(hit_N: Array, member_N: Array) -> Array:
    """Mean of hit over members (NaN when there are none: the rate is undefined)."""
    members = jnp.sum(member_N)
    return jnp.where(members > 0, jnp.sum(hit_N & member_N) / jnp.maximum(members, 1), jnp.nan)


def group_accuracy_gap(probs_NxC: Array, labels_N: Array, group_N: Array) -> Array:
    """|accuracy on the group - accuracy off it|."""
    correct_N = jnp.argmax(probs_NxC, -1) == labels_N
    return jnp.abs(_rate(correct_N, group_N) - _rate(correct_N, ~group_N))


def demographic_parity_gap(probs_NxC: Array, group_N: Array) -> Array:
    """max over classes c of |P(pred = c | group) - P(pred = c | not group)|."""
    pred_N = jnp.argmax(probs_NxC, -1)
    classes = jnp.arange(probs_NxC.shape[-1])
    gaps_C = jax.vmap(lambda c: jnp.abs(_rate(pred_N == c, group_N)
                                        - _rate(pred_N == c, ~group_N)))(classes)
    return jnp.nanmax(gaps_C)


def equalized_odds_gap(probs_NxC: Array, labels_N: Array, group_N: Array) -> Array:
    """max over classes c of the larger of the true-positive-rate gap and the
    false-positive-rate gap between the group and the rest (Hardt et al. 2016)."""
    pred_N = jnp.argmax(probs_NxC, -1)

    def gap(c: Array) -> Array:
        pos_N, hit_N = labels_N == c, pred_N == c
        tpr = jnp.abs(_rate(hit_N, pos_N & group_N) - _rate(hit_N, pos_N & ~group_N))
        fpr = jnp.abs(_rate(hit_N, ~pos_N & group_N) - _rate(hit_N, ~pos_N & ~group_N))
        return jnp.fmax(tpr, fpr)  # the defined one where the other is NaN

    return jnp.nanmax(jax.vmap(gap)(jnp.arange(probs_NxC.shape[-1])))
