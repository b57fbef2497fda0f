"""Curation: which of a teacher's samples are kept before they are mixed with real data.

Every filter returns per-row 0/1 weights over the n synthetic rows (static shapes; fits
already take weights), so a filtered chain compiles once:

- ``none``: every row is kept.
- ``truth_likelihood``: a verifier scores each row by its true log-likelihood
  ``world.truth_log_likelihood(x)`` plus Gaussian noise of std ``filter.noise`` nats (0: a
  perfect verifier, after Feng et al. 2024), and the round(``filter.keep`` n) rows with the
  highest scores are kept, i.e. those above the empirical (1 - keep) quantile.
- ``self_likelihood``: the same, scored by the teacher's own log-likelihood
  ``world.log_likelihood(teacher, x)`` (no noise): the selection bias that narrows a
  distribution towards its modes.
- ``dedup``: one row of every set of exactly equal rows is kept (the first in row order).

Recorded per generation: ``kept_fraction`` (kept rows / n) and, for the likelihood filters
in worlds with known truth, ``verifier_precision``: the share of kept rows that a perfect
verifier keeping as many rows would also keep. Generation 0 fits real data unfiltered:
both are NaN there.

Ties in the scores are broken by row order (lower first), so equal scores keep a
deterministic number of rows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

from sim.errors import require
from sim.worlds.base import Array, Data, Dyn, MetricInfo


class Filter(str, enum.Enum):
    none = "none"
    truth_likelihood = "truth_likelihood"
    self_likelihood = "self_likelihood"
    dedup = "dedup"


@dataclass(frozen=True)
class FilterConfig:
    kind: Filter = Filter.none
    keep: float = 0.5  # likelihood filters: the share of each generation's samples kept
    noise: float = 0.0  # truth_likelihood: std of the verifier's score noise (nats; 0 = perfect)


# What each filter needs from a world (an optional method of the World protocol).
NEEDS = {Filter.truth_likelihood: "truth_log_likelihood",
         Filter.self_likelihood: "log_likelihood"}

CURATION_INFO = {
    "kept_fraction": MetricInfo(
        "share of the synthetic samples kept", "",
        "kept rows / n of the generation's synthetic samples after the filter (NaN at "
        "generation 0, which fits real data unfiltered)"),
    "verifier_precision": MetricInfo(
        "precision of the filter against a perfect verifier", "",
        "share of the kept rows that a perfect verifier (true log-likelihood, no noise) "
        "keeping as many rows would also keep; NaN at generation 0 and where the truth or "
        "the filter's scores are unknown (dedup)"),
}


def top_rows(scores_N: Array, count: Array) -> Array:
    """1.0 for the ``count`` rows with the highest scores (ties: lower row first), else 0."""
    n = scores_N.shape[0]
    order_N = jnp.lexsort((jnp.arange(n), -scores_N))  # highest score first
    rank_N = jnp.zeros(n, jnp.int32).at[order_N].set(jnp.arange(n, dtype=jnp.int32))
    return (rank_N < count).astype(jnp.float32)


def distinct_rows(data: Data) -> Array:
    """1.0 for the first row (in row order) of every set of exactly equal rows, else 0."""
    columns = [c for leaf in jax.tree.leaves(data)
               for c in leaf.reshape(leaf.shape[0], -1).T]
    n = columns[0].shape[0]
    order_N = jnp.lexsort((jnp.arange(n), *reversed(columns)))  # equal rows adjacent
    same_as_previous_N = jnp.ones(n - 1, bool)
    for column in columns:
        sorted_N = column[order_N]
        same_as_previous_N &= sorted_N[1:] == sorted_N[:-1]
    first_N = jnp.concatenate([jnp.ones(1, bool), ~same_as_previous_N])
    return jnp.zeros(n, jnp.float32).at[order_N].set(first_N.astype(jnp.float32))


def kept_count(keep: Array, n: Array | int) -> Array:
    """round(keep n), at least 1."""
    return jnp.maximum(jnp.round(keep * n), 1.0)


class Curation:
    """A filter bound to a world: ``__call__`` weighs a generation's synthetic rows."""

    def __init__(self, cfg: FilterConfig, world: Any):
        self.kind = cfg.kind
        self.world = world
        self.knows_truth = hasattr(world, "truth_log_likelihood")

    @property
    def active(self) -> bool:
        return self.kind is not Filter.none

    def __call__(self, key: Array, synthetic: Data, dyn: Dyn,
                 teacher_log_likelihood: Callable[[Data], Array] | None,
                 valid_N: Array | None = None) -> tuple[Array, dict[str, Array]]:
        """(weights over the n synthetic rows, the generation's curation metrics);
        ``teacher_log_likelihood``: the teacher's log-likelihood of each row (N,);
        ``valid_N``: 1.0 for the rows that exist (a synthetic count schedule's mask; None:
        all), the only ones a filter keeps and its kept fraction counts."""
        n = jax.tree.leaves(synthetic)[0].shape[0]
        nan = jnp.float32(jnp.nan)
        valid_N = jnp.ones(n) if valid_N is None else valid_N
        rows = valid_N.sum()
        if self.kind is Filter.dedup:
            weights_N = distinct_rows(synthetic) * valid_N  # firsts in row order: valid first
            return weights_N, {"kept_fraction": weights_N.sum() / rows,
                               "verifier_precision": nan}
        count = kept_count(dyn["filter.keep"], rows)
        truth_N = self.world.truth_log_likelihood(synthetic) if self.knows_truth else None
        if self.kind is Filter.truth_likelihood:
            scores_N = truth_N + dyn["filter.noise"] * jax.random.normal(key, (n,))
        else:
            scores_N = teacher_log_likelihood(synthetic)
        weights_N = top_rows(jnp.where(valid_N > 0, scores_N, -jnp.inf), count)
        precision = nan
        if truth_N is not None:
            best_N = top_rows(jnp.where(valid_N > 0, truth_N, -jnp.inf), count)
            precision = jnp.sum(weights_N * best_N) / count
        return weights_N, {"kept_fraction": weights_N.sum() / rows,
                           "verifier_precision": precision}

    def unfiltered(self) -> dict[str, Array]:
        """The curation metrics of generation 0 (NaN: nothing is filtered)."""
        return {name: jnp.float32(jnp.nan) for name in CURATION_INFO}


def validate(cfg: FilterConfig) -> None:
    """One-line errors for the traced settings (each point of a grid is checked)."""
    require(0.0 < cfg.keep <= 1.0, "filter.keep", cfg.keep, "a fraction in (0, 1]")
    require(cfg.noise >= 0.0, "filter.noise", cfg.noise, "a float >= 0 (nats; 0 = perfect)")


def check_world(cfg: FilterConfig, world: Any, name: str, n: int) -> None:
    """Refuse a filter the world cannot score, or one that keeps fewer rows than a fit
    needs."""
    usable = [f.value for f in Filter if NEEDS.get(f) is None or hasattr(world, NEEDS[f])]
    require(cfg.kind.value in usable, "filter.kind", cfg.kind,
            f"one of {', '.join(usable)} in the world {name!r}, which has no "
            f"{NEEDS.get(cfg.kind, '')} score")
    if cfg.kind in NEEDS:
        kept = max(round(cfg.keep * n), 1)
        require(kept >= world.min_rows, "filter.keep", cfg.keep,
                f"a fraction that keeps at least {world.min_rows} of the {n} samples (the "
                f"fewest rows the world's fit needs); it keeps {kept}")
