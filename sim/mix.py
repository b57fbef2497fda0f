"""Mix policies: how synthetic and real data form each generation's training set.

Every policy returns a fixed-shape data pool with per-row 0/1 weights, so that a chain's
generations compile once and accumulated pools need no dynamic shapes.

- ``replace``: only the newest synthetic data (n rows).
- ``accumulate``: the real data and every generation's synthetic data so far; the pool has
  room for (G + 1) n rows and generation g sees the first (g + 1) n. (A world with
  sufficient statistics accumulates those instead: ``sim.chain``.)
- ``accumulate_subsample``: the accumulated pool, but each fit sees a uniform subsample
  without replacement of ``subsample_size`` rows (all rows while the pool is smaller).
- ``fresh``: round(real_fraction * n) fresh real rows plus synthetic rows for the rest.

Generation 0 always fits on n real rows.
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
        return _write_rows(pool, real, jnp.asarray(0))

    def __call__(self, state: Any, key: Array, generation: Array, real: Optional[Data],
                 synthetic: Data, dyn: Dyn) -> tuple[Any, Data, Array]:
        """Generation g's training set: (new state, data pool, weights over its rows)."""
        if self.policy is MixPolicy.replace:
            return state, synthetic, jnp.ones(self.n)
        if self.policy is MixPolicy.fresh:
            n_real = jnp.round(dyn["mix.real_fraction"] * self.n)
            is_real_N = jnp.arange(self.n) < n_real
            return state, _where_rows(is_real_N, real, synthetic), jnp.ones(self.n)
        pool = _write_rows(state, synthetic, generation * self.n)
        capacity = (self.generations + 1) * self.n
        valid_P = jnp.arange(capacity) < (generation + 1) * self.n
        if self.policy is MixPolicy.accumulate:
            return pool, pool, valid_P.astype(jnp.float32)
        scores_P = jnp.where(valid_P, jax.random.uniform(key, (capacity,)), jnp.inf)
        rank_P = jnp.argsort(jnp.argsort(scores_P))
        chosen_P = valid_P & (rank_P < self.subsample_size)
        return pool, pool, chosen_P.astype(jnp.float32)


def validate(cfg: MixConfig) -> None:
    """One-line errors for the traced settings (each point of a grid is checked)."""
    require(0.0 <= cfg.real_fraction <= 1.0, "mix.real_fraction", cfg.real_fraction,
            "a fraction in [0, 1]")


def make_mix(cfg: MixConfig, n_samples: int, generations: int, min_rows: int = 1) -> Mix:
    """Validate a mix config and build the policy; ``min_rows`` is what a fit needs."""
    validate(cfg)
    size = n_samples if cfg.subsample_size is None else cfg.subsample_size
    require(size >= min_rows, "mix.subsample_size", cfg.subsample_size,
            f"an integer >= {min_rows} (the fewest rows the world's fit needs), or null")
    return Mix(cfg.policy, n_samples, generations, size)
