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

The synthetic sample count n_g of generation g >= 1 is n (``world.n_samples``) unless
``synthetic_schedule`` lists one count per generation 1..G, or ``synthetic_decay`` < 1 sets
n_g = round(n * synthetic_decay^(g-1)). The counts are static (known at build, so they are
checked before compute) but the shapes are not: the teacher still produces n rows, and the
rows after the first n_g get weight 0 (a mask, like a filter's), so a chain compiles once.
Under ``fresh`` the n_g synthetic rows come after the round(r_g n) real ones, and the two
must fit the n slots. A world that draws a fit or its statistics on its own samples without
materialising them (the Gaussian's ``refit`` and ``sample_statistics``) draws them for n_g
samples directly.

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
import numpy as np

from sim.errors import require
from sim.worlds.base import Array, Data, Dyn, MetricInfo


# Recorded every generation of every run, so that the jobs of a sweep over the count's
# schedule combine into one variable (world.n_samples where none is set).
MIX_INFO = {
    "synthetic_count": MetricInfo(
        "synthetic samples", "", "n_g, the number of samples the teacher made for "
        "generation g, before any filter (mix.synthetic_schedule or mix.synthetic_decay; "
        "world.n_samples without either, when under mix=fresh the round(r_g n) real rows "
        "take the place of as many of them; 0 at generation 0, which fits world.n_samples "
        "real samples)"),
}


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
    synthetic_schedule: tuple[int, ...] = ()  # synthetic samples n_g per generation 1..G (() = n)
    synthetic_decay: float = 1.0  # n_g = round(n_samples * decay^(g - 1)) (1 = n every generation)


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
    counts: tuple[int, ...] = ()  # synthetic samples n_g of generations 1..G (() = n each)

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

    def synthetic_count(self, generation: Array) -> Array | int:
        """n_g, generation g's synthetic sample count (the static n without a schedule)."""
        if not self.counts:
            return self.n
        return jnp.asarray(self.counts, jnp.int32)[generation - 1]

    def synthetic_mask(self, generation: Array) -> Array | None:
        """1.0 for the first n_g of the n synthetic rows, else 0 (None without a schedule)."""
        if not self.counts:
            return None
        return (jnp.arange(self.n) < self.synthetic_count(generation)).astype(jnp.float32)

    def real_fraction(self, generation: Array, dyn: Dyn) -> Array:
        """r_g, the share of generation g's rows that are fresh real data (``fresh``)."""
        return real_fraction_at(generation, self.schedule, dyn["mix.real_fraction"],
                                dyn.get("mix.real_fraction_decay", 1.0))

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


def real_fraction_at(generation: Array | int, schedule: tuple[float, ...],
                     fraction: Array | float, decay: Array | float) -> Array:
    """r_g in float32: the schedule's g-th entry, else fraction * decay^(g - 1) (traced in
    the chain, on the host in ``check_fresh_counts``, so both round the same numbers)."""
    if schedule:
        return jnp.asarray(schedule, jnp.float32)[generation - 1]
    return jnp.float32(fraction) * jnp.float32(decay) ** (generation - 1)


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


def synthetic_counts(cfg: MixConfig, n_samples: int, generations: int, min_rows: int = 1
                     ) -> tuple[int, ...]:
    """Check the synthetic count settings and give n_g for g = 1..G (() = n each): one line
    naming the key where a count is negative, above the pool size n, below what a fit needs,
    or a schedule has the wrong length."""
    schedule = list(cfg.synthetic_schedule)
    # the fewest a generation may have: a fit under replace sees only them, the other
    # policies see real rows too (fresh: checked with its real share, check_fresh_counts)
    low = min_rows if cfg.policy is MixPolicy.replace else 1
    require(0.0 < cfg.synthetic_decay <= 1.0, "mix.synthetic_decay", cfg.synthetic_decay,
            "a factor in (0, 1] (1 = world.n_samples synthetic samples every generation)")
    require(not schedule or cfg.synthetic_decay == 1.0, "mix.synthetic_decay",
            cfg.synthetic_decay, "only 1.0 with a mix.synthetic_schedule (which gives every "
            "generation's count)")
    require(not schedule or (len(schedule) == generations and all(
        float(c).is_integer() and low <= c <= n_samples for c in schedule)),
            "mix.synthetic_schedule", schedule,
            f"one integer count in [{low}, {n_samples}] (at most world.n_samples, the pool "
            f"size; at least {low}, the fewest a fit under mix={cfg.policy.value} needs) per "
            f"generation 1..{generations} ({generations} values), or empty")
    if schedule:
        return tuple(int(c) for c in schedule)
    if cfg.synthetic_decay == 1.0:
        return ()
    counts = tuple(int(np.round(n_samples * cfg.synthetic_decay ** (g - 1)))
                   for g in range(1, generations + 1))
    require(not counts or counts[-1] >= low, "mix.synthetic_decay", cfg.synthetic_decay,
            f"a factor whose counts round({n_samples} x decay^(g-1)) stay >= {low} (the "
            f"fewest a fit under mix={cfg.policy.value} needs) up to generation "
            f"{generations}; this one reaches {counts[-1] if counts else n_samples}")
    return counts


def check_fresh_counts(cfg: MixConfig, counts: tuple[int, ...], n_samples: int,
                       min_rows: int) -> None:
    """Under ``fresh``, every generation's round(r_g n) real and n_g synthetic rows fit the
    n slots and give a fit its rows (for one grid point's real fraction and decay)."""
    if cfg.policy is not MixPolicy.fresh or not counts:
        return
    key = "mix.synthetic_schedule" if cfg.synthetic_schedule else "mix.synthetic_decay"
    value = list(cfg.synthetic_schedule) if cfg.synthetic_schedule else cfg.synthetic_decay
    reals = np.asarray(jnp.round(n_samples * real_fraction_at(
        jnp.arange(1, len(counts) + 1), cfg.real_fraction_schedule, cfg.real_fraction,
        cfg.real_fraction_decay))).astype(int)
    for g, (real, count) in enumerate(zip(reals, counts), start=1):
        require(min_rows <= real + count <= n_samples, key, value,
                f"counts that with the real rows fill at most the world.n_samples="
                f"{n_samples} slots and at least {min_rows} (mix=fresh); generation {g} has "
                f"{real} real and {count} synthetic rows")


def make_mix(cfg: MixConfig, n_samples: int, generations: int, min_rows: int = 1,
             weighted: bool = False) -> Mix:
    """Validate a mix config and build the policy; ``min_rows`` is what a fit needs,
    ``weighted``: synthetic rows come with a filter's weights (so do they under a synthetic
    count schedule)."""
    validate(cfg)
    validate_schedule(cfg, generations)
    counts = synthetic_counts(cfg, n_samples, generations, min_rows)
    size = n_samples if cfg.subsample_size is None else cfg.subsample_size
    require(size >= min_rows, "mix.subsample_size", cfg.subsample_size,
            f"an integer >= {min_rows} (the fewest rows the world's fit needs), or null")
    return Mix(cfg.policy, n_samples, generations, size, weighted or bool(counts),
               tuple(float(r) for r in cfg.real_fraction_schedule), counts)
