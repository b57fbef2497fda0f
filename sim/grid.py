"""A grid of traced settings, run as lanes of one compiled program.

``grid`` gives values to sweep for traced settings, under the same keys as the settings
themselves: ``grid.sampling.temperature=[0.5,1.0] grid.mix.real_fraction=[0,0.1,0.5]``
(``python -m sim -m`` writes these from comma-separated sweeps of traced keys). Its points
are the Cartesian product of the value lists (the key order below; the last key varies
fastest). Every point runs ``seeds`` lanes with the same lane keys as a run of that point
alone (lane i of every point uses ``fold_in(key(seed), i)``: common random numbers, so
points can be compared seed by seed, and a point re-run alone gives the same numbers).

Lanes are ordered point-major: lane ``p * seeds + i`` is seed ``i`` of point ``p``.
This module imports no JAX: Hydra's sweeper plugin reads ``TRACED_KEYS`` from it.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, get_type_hints

import numpy as np

from sim.errors import require

Values = Optional[List[float]]  # None: not swept


@dataclass(frozen=True)
class SamplingGrid:
    temperature: Values = None
    top_p: Values = None
    min_p: Values = None


@dataclass(frozen=True)
class MixGrid:
    real_fraction: Values = None
    real_fraction_decay: Values = None


@dataclass(frozen=True)
class DistillGrid:
    alpha: Values = None
    tau: Values = None
    beta: Values = None
    feature_weight: Values = None
    on_policy_fraction: Values = None


@dataclass(frozen=True)
class TrainGrid:
    lr: Values = None
    weight_decay: Values = None


@dataclass(frozen=True)
class FilterGrid:
    keep: Values = None
    noise: Values = None


@dataclass(frozen=True)
class DefenseGrid:
    noise_scale: Values = None
    delta: Values = None
    lam: Values = None


@dataclass(frozen=True)
class GridConfig:
    """Values of the traced settings (``sim/distill.py:dynamic_settings``, the mix's real
    fraction and its decay, the filter's kept share and verifier noise, and
    ``sim/exposure.py:defense_settings``) to run as lanes; each swept key becomes a
    dimension of the results."""

    sampling: SamplingGrid = field(default_factory=SamplingGrid)
    mix: MixGrid = field(default_factory=MixGrid)
    distill: DistillGrid = field(default_factory=DistillGrid)
    train: TrainGrid = field(default_factory=TrainGrid)
    filter: FilterGrid = field(default_factory=FilterGrid)
    defense: DefenseGrid = field(default_factory=DefenseGrid)


TRACED_KEYS = tuple(f"{group}.{name}" for group, settings in get_type_hints(GridConfig).items()
                    for name in get_type_hints(settings))
OBJECTIVES_USING = {  # the objectives whose loss reads each distillation setting
    "distill.alpha": ("soft", "feature"),
    "distill.tau": ("soft", "feature"),
    "distill.beta": ("jsd", "on_policy"),
    "distill.feature_weight": ("feature",),
    "distill.on_policy_fraction": ("on_policy",),
}

FILTERS_USING = {  # the filters that read each filter setting
    "filter.keep": ("truth_likelihood", "self_likelihood"),
    "filter.noise": ("truth_likelihood",),
}
DEFENSE_USING = {"defense.noise_scale": "logit_noise", "defense.delta": "watermark",
                 "defense.lam": "antidistillation"}

Grid = tuple[tuple[str, tuple[float, ...]], ...]  # ((config key, values), ...), hashable


def as_grid(cfg: GridConfig) -> Grid:
    """The swept keys of a grid config with their values, in ``TRACED_KEYS`` order."""
    grid = []
    for key in TRACED_KEYS:
        group, name = key.split(".")
        values = getattr(getattr(cfg, group), name)
        if values is not None:
            grid.append((key, tuple(float(v) for v in values)))
    return tuple(grid)


def points(grid: Grid) -> list[dict[str, float]]:
    """Every grid point as {config key: value}; one empty point for an empty grid."""
    keys = [key for key, _ in grid]
    return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))]


def shape(grid: Grid) -> tuple[int, ...]:
    return tuple(len(values) for _, values in grid)


def with_values(cfg: Any, values: Mapping[str, Any]) -> Any:
    """A frozen dataclass config with dotted keys (``sampling.temperature``) replaced."""
    for key, value in values.items():
        head, _, rest = key.partition(".")
        child = getattr(cfg, head)
        cfg = dataclasses.replace(cfg, **{head: with_values(child, {rest: value})
                                          if rest else value})
    return cfg


def lane_settings(base: Mapping[str, float], grid: Grid, seeds: int) -> dict[str, np.ndarray]:
    """Each traced setting as a float32 array over the point-major lanes."""
    every = points(grid)
    settings = {key: np.full(len(every) * seeds, value, np.float32)
                for key, value in base.items()}
    for p, point in enumerate(every):
        for key, value in point.items():
            settings[key][p * seeds:(p + 1) * seeds] = value
    return settings


def validate(cfg: Any, grid: Grid, trains: bool) -> None:
    """One-line errors for empty or repeated values and for grid keys the config does not
    use (``trains``: the world trains its models; Hydra refuses keys that are not traced
    settings while composing).

    The values themselves are checked point by point, as a single run's would be
    (``sim.experiment.build``)."""
    objective = cfg.distill.objective.value
    for key, values in grid:
        shown = f"grid.{key}"
        require(len(values) >= 1, shown, list(values), "a non-empty list of numbers")
        require(len(set(values)) == len(values), shown, list(values), "distinct values")
        using = OBJECTIVES_USING.get(key)
        require(using is None or objective in using, shown, list(values),
                f"only with distill={' or distill='.join(using or ())} "
                f"(this run trains with distill={objective})")
        require(not key.startswith("mix.") or cfg.mix.policy.value == "fresh", shown,
                list(values), f"only with mix=fresh (this run has mix={cfg.mix.policy.value})")
        require(not key.startswith("mix.") or not cfg.mix.real_fraction_schedule, shown,
                list(values), "only without a mix.real_fraction_schedule (which gives every "
                "generation's fraction)")
        filters = FILTERS_USING.get(key)
        require(filters is None or cfg.filter.kind.value in filters, shown, list(values),
                f"only with filter={' or filter='.join(filters or ())} (this run has "
                f"filter={cfg.filter.kind.value})")
        defense = DEFENSE_USING.get(key)
        require(defense is None or cfg.defense.kind.value == defense, shown, list(values),
                f"only with defense={defense} (this run has defense={cfg.defense.kind.value})")
        require(trains or not key.startswith("train."), shown, list(values),
                "only in trained worlds (digits, markov_lm, text; the others fit by maximum "
                "likelihood)")


def covering(grid: Grid) -> dict[str, float]:
    """Values under which every point's static choices are made: a sampling filter that
    any point switches on is compiled in for all (top-p 1 and min-p 0 pass it exactly)."""
    cover = {}
    for key, values in grid:
        if key == "sampling.top_p":
            cover[key] = min(values)
        elif key == "sampling.min_p":
            cover[key] = max(values)
    return cover
