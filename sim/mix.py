"""Mix policies: how synthetic and real data form each generation's training set.

Every policy returns a fixed-shape data pool with per-row 0/1 weights, so that a chain's
generations compile once and accumulated pools need no dynamic shapes.

- ``replace``: only the newest synthetic data (n rows).
- ``accumulate``: the real data and every generation's synthetic data so far; the pool has
  room for (G + 1) n rows and generation g sees the first (g + 1) n. (A world with
  sufficient statistics accumulates those instead: ``sim.chain``.)
- ``accumulate_subsample``: the accumulated pool, but each fit sees a uniform subsample
  without replacement of ``subsample_size`` rows (all rows while the pool is smaller).
- ``fresh``: round(r_g * n) fresh real rows plus synthetic rows for the rest, where the
  real fraction r_g of generation g >= 1 is ``real_fraction`` * ``real_fraction_decay``^(g-1)
  (decay 1: constant), or the g-th entry of ``real_fraction_schedule`` where one is given
  (one fraction per generation 1..G): studies of fading fresh data need no code.

Generation 0 always fits on n real rows.

Curated synthetic data (``sim.curation``) comes with 0/1 weights over its n rows: ``replace``
uses them as they are, the accumulating policies keep them beside the pool (a policy
``weighted`` keeps a weight per pool row), and ``fresh`` puts the kept synthetic rows in the
slots after the real ones (so min(kept, n - real) synthetic rows are seen).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Optional

import jax
import jax.numpy as jnp

from sim.errors import require
from sim.worlds.base import Array, Data, Dyn


class MixPolicy(str, enum.Enum):
    replace = "replace"
    accumulate = "accumulate"
    accumulate_subsample = "accumulate_subsample"
    fresh = "fresh"


@dataclass(frozen=True)
class MixConfig:
    policy: MixPolicy = MixPolicy.replace
    real_fraction: float = 0.0  # fresh: share of each generation's rows that are new real data
    real_fraction_decay: float = 1.0  # fresh: r_g = real_fraction * decay^(g - 1) (1 = constant)
    real_fraction_schedule: tuple[float, ...] = ()  # fresh: r_g per generation 1..G (() = off)
    subsample_size: Optional[int] = None  # accumulate_subsample: rows per fit (None = n_samples)


def _where_rows(mask_N: Array, a: Data, b: Data) -> Data:
    """Row-wise select between two pytrees of equal structure."""
    def pick(x: Array, y: Array) -> Array:
        return jnp.where(mask_N.reshape((-1,) + (1,) * (x.ndim - 1)), x, y)
    return jax.tree.map(pick, a, b)


def _write_rows(pool: Data, rows: Data, start: Array) -> Data:
    return jax.tree.map(
        lambda p, r: jax.lax.dynamic_update_slice_in_dim(p, r.astype(p.dtype), start, 0),
        pool, rows)


@dataclass(frozen=True)
class Mix:
    """A mix policy for chains of ``generations`` with ``n`` samples per generation."""

    policy: MixPolicy
    n: int
    generations: int
    subsample_size: int
    weighted: bool = False  # synthetic rows come with weights (a filter): pools keep them
    schedule: tuple[float, ...] = ()  # fresh: the real fraction of generations 1..G

    @property
    def needs_real(self) -> bool:
        """Whether generations g >= 1 draw fresh real data."""
        return self.policy is MixPolicy.fresh

    @property
    def accumulates(self) -> bool:
        return self.policy in (MixPolicy.accumulate, MixPolicy.accumulate_subsample)

    def init(self, real: Data) -> Any:
        """The policy's state after generation 0 (the accumulated pool, or nothing)."""
        if not self.accumulates:
            return ()
        capacity = (self.generations + 1) * self.n
        pool = jax.tree.map(lambda x: jnp.zeros((capacity,) + x.shape[1:], x.dtype), real)
        pool = _write_rows(pool, real, jnp.asarray(0))
        if not self.weighted:
            return pool
        return pool, (jnp.arange(capacity) < self.n).astype(jnp.float32)

    def real_fraction(self, generation: Array, dyn: Dyn) -> Array:
        """r_g, the share of generation g's rows that are fresh real data (``fresh``)."""
        if self.schedule:
            return jnp.asarray(self.schedule, jnp.float32)[generation - 1]
        decay = dyn.get("mix.real_fraction_decay", 1.0)
        return dyn["mix.real_fraction"] * decay ** (generation - 1)

    def __call__(self, state: Any, key: Array, generation: Array, real: Optional[Data],
                 synthetic: Data, dyn: Dyn, synthetic_weights_N: Optional[Array] = None
                 ) -> tuple[Any, Data, Array]:
        """Generation g's training set: (new state, data pool, weights over its rows).
        ``synthetic_weights_N``: the curation's weights of the synthetic rows (None: all 1;
        with an accumulating policy only if ``weighted``)."""
        w_N = jnp.ones(self.n) if synthetic_weights_N is None else synthetic_weights_N
        if self.policy is MixPolicy.replace:
            return state, synthetic, w_N
        if self.policy is MixPolicy.fresh:
            n_real = jnp.round(self.real_fraction(generation, dyn) * self.n)
            is_real_N = jnp.arange(self.n) < n_real
            if synthetic_weights_N is not None:  # kept rows last, so real slots drop none
                order_N = jnp.argsort(w_N, stable=True)
                synthetic, w_N = jax.tree.map(lambda x: x[order_N], synthetic), w_N[order_N]
            return (state, _where_rows(is_real_N, real, synthetic),
                    jnp.where(is_real_N, 1.0, w_N))
        capacity = (self.generations + 1) * self.n
        start = generation * self.n
        if self.weighted:
            rows, pool_w_P = state
            pool_w_P = jax.lax.dynamic_update_slice_in_dim(pool_w_P, w_N, start, 0)
            pool = _write_rows(rows, synthetic, start)
            state_out, valid_P = (pool, pool_w_P), pool_w_P > 0
        else:
            pool = state_out = _write_rows(state, synthetic, start)
            valid_P = jnp.arange(capacity) < (generation + 1) * self.n
        if self.policy is MixPolicy.accumulate:
            return state_out, pool, valid_P.astype(jnp.float32)
        scores_P = jnp.where(valid_P, jax.random.uniform(key, (capacity,)), jnp.inf)
        rank_P = jnp.argsort(jnp.argsort(scores_P))
        chosen_P = valid_P & (rank_P < self.subsample_size)
        return state_out, pool, chosen_P.astype(jnp.float32)


def validate(cfg: MixConfig) -> None:
    """One-line errors for the traced settings (each point of a grid is checked)."""
    require(0.0 <= cfg.real_fraction <= 1.0, "mix.real_fraction", cfg.real_fraction,
            "a fraction in [0, 1]")
    require(0.0 <= cfg.real_fraction_decay <= 1.0, "mix.real_fraction_decay",
            cfg.real_fraction_decay, "a factor in [0, 1] (1 = a constant real fraction)")


def validate_schedule(cfg: MixConfig, generations: int) -> None:
    """One-line errors for a real-fraction schedule: one fraction per generation 1..G, and
    schedules only where fresh real data is mixed in."""
    fresh = cfg.policy is MixPolicy.fresh
    schedule = list(cfg.real_fraction_schedule)
    require(not schedule or (len(schedule) == generations
                             and all(0.0 <= r <= 1.0 for r in schedule)),
            "mix.real_fraction_schedule", schedule,
            f"one fraction in [0, 1] per generation 1..{generations} ({generations} values), "
            "or empty")
    require(fresh or not schedule, "mix.real_fraction_schedule", schedule,
            f"only with mix=fresh (this run has mix={cfg.policy.value})")
    require(fresh or cfg.real_fraction_decay == 1.0, "mix.real_fraction_decay",
            cfg.real_fraction_decay, f"only 1.0 unless mix=fresh (this run has "
            f"mix={cfg.policy.value})")
    require(not schedule or cfg.real_fraction_decay == 1.0, "mix.real_fraction_decay",
            cfg.real_fraction_decay, "only 1.0 with a mix.real_fraction_schedule (which "
            "gives every generation's fraction)")


def make_mix(cfg: MixConfig, n_samples: int, generations: int, min_rows: int = 1,
             weighted: bool = False) -> Mix:
    """Validate a mix config and build the policy; ``min_rows`` is what a fit needs,
    ``weighted``: synthetic rows come with a filter's weights."""
    validate(cfg)
    validate_schedule(cfg, generations)
    size = n_samples if cfg.subsample_size is None else cfg.subsample_size
    require(size >= min_rows, "mix.subsample_size", cfg.subsample_size,
            f"an integer >= {min_rows} (the fewest rows the world's fit needs), or null")
    return Mix(cfg.policy, n_samples, generations, size, weighted,
               tuple(float(r) for r in cfg.real_fraction_schedule))
