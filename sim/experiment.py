"""One experiment: build (validate everything), run the lanes, return the results Dataset.

This is the importable function behind ``python -m sim``; tests call it directly.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import xarray as xr
from omegaconf import OmegaConf

from sim import checkpoint, compile_cache
from sim import grid as grids
from sim.chain import Chain
from sim.config import Config
from sim.curation import Curation, check_world
from sim.curation import validate as validate_filter
from sim.distill import check_closed_form, dynamic_settings
from sim.divergence import DIVERGED_INFO, mark_diverged
from sim.distill import validate as validate_distill
from sim.errors import require
from sim.exposure import check_strengths, defense_settings
from sim.lanes import lane_by_lane, lane_keys, resolve_strategy, run_lanes
from sim.metrics.retention import RETENTION_INFO, relative_metrics, retention_metrics
from sim.mix import check_fresh_counts, make_mix
from sim.mix import validate as validate_mix
from sim.record import run_attrs, to_dataset
from sim.teacher import make_teaching
from sim.worlds import WORLDS, make_world, world_name


class Experiment(NamedTuple):
    cfg: Config
    chain: Chain
    dyn: dict[str, float]  # dynamic settings of every lane, before the grid's values
    grid: grids.Grid  # traced settings swept as lanes (empty: one point)


def _validate_point(cfg: Config, world: str) -> None:
    """The checks of the traced settings, for one grid point's values."""
    validate_distill(cfg.distill, cfg.sampling, cfg.train, cfg.student)
    validate_mix(cfg.mix)
    validate_filter(cfg.filter)
    check_strengths(cfg.defense)
    if WORLDS[world].closed_form:
        check_closed_form(world, cfg.distill, cfg.sampling, cfg.student)


def build(cfg: Config) -> Experiment:
    """Check every setting and build the chain; raises ConfigError before any compute."""
    require(cfg.generations >= 0, "generations", cfg.generations, "an integer >= 0")
    require(cfg.seeds >= 1, "seeds", cfg.seeds, "an integer >= 1")
    resolve_strategy(cfg.lanes)
    checkpoint.validate(cfg.checkpoint)
    compile_cache.configure(cfg.compile_cache, cfg.compile_cache_dir)  # before any compile
    grid = grids.as_grid(cfg.grid)
    name = world_name(cfg.world)
    grids.validate(cfg, grid, trains=WORLDS[name].distils)
    for point in grids.points(grid):
        _validate_point(grids.with_values(cfg, point), name)
    static = grids.with_values(cfg, grids.covering(grid))
    world = make_world(static.world, static.distill, static.sampling, static.train,
                       static.student, cfg.exposure, cfg.defense)
    teaching = make_teaching(cfg.teacher, name, WORLDS[name].distils)
    curation = Curation(cfg.filter, world)
    mix = make_mix(cfg.mix, world.n_samples, cfg.generations, world.min_rows,
                   weighted=curation.active)
    for point in grids.points(grid):
        at_point = grids.with_values(cfg, point)
        check_fresh_counts(at_point.mix, mix.counts, world.n_samples, world.min_rows)
        check_world(at_point.filter, world, name, min(mix.counts, default=world.n_samples))
    dyn = {"mix.real_fraction": cfg.mix.real_fraction,
           "mix.real_fraction_decay": cfg.mix.real_fraction_decay,
           "filter.keep": cfg.filter.keep, "filter.noise": cfg.filter.noise,
           **dynamic_settings(cfg.distill, cfg.sampling, cfg.train),
           **defense_settings(cfg.defense)}
    chain = Chain(world, mix, lane_by_lane(cfg.lanes, world),
                  curation=curation if curation.active else None, teaching=teaching)
    return Experiment(cfg, chain, dyn, grid)


def run(experiment: Experiment, swept: Mapping[str, Any] | None = None,
        config_yaml: str | None = None, resume: checkpoint.Snapshot | None = None,
        save: Callable[[Callable[[], checkpoint.Snapshot]], None] | None = None
        ) -> xr.Dataset:
    """Run all lanes of a built experiment (seeds x grid points); ``swept`` (the keys a
    multirun sweeps across jobs) becomes length-1 coordinates. ``resume`` continues from a
    checkpoint's snapshot; ``save`` is offered one after every generation
    (``sim.lanes.run_lanes``)."""
    cfg, grid = experiment.cfg, experiment.grid
    start = time.perf_counter()
    points = len(grids.points(grid))
    keys_L = lane_keys(cfg.seed, np.tile(np.arange(cfg.seeds), points))  # same per point
    dyn_L = grids.lane_settings(experiment.dyn, grid, cfg.seeds)
    metrics, costs, devices = run_lanes(experiment.chain, keys_L, dyn_L, cfg.generations,
                                        cfg.lanes, cfg.progress, resume, save)
    wall = time.perf_counter() - start
    world = experiment.chain.world
    info = dict(experiment.chain.metric_info)
    if "train_loss" in metrics:
        metrics = mark_diverged(metrics, cfg.train.diverged_loss)
        info["diverged"] = DIVERGED_INFO
    if world.retention_of is not None:
        metrics.update(retention_metrics(metrics, *world.retention_of))
        info.update(RETENTION_INFO)
    relative = getattr(world, "relative_metrics", {})  # optional in the World protocol
    metrics.update(relative_metrics(metrics, relative))
    info.update({name: r.info for name, r in relative.items()})
    if config_yaml is None:
        config_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    return to_dataset(metrics, info, swept, run_attrs(config_yaml, wall, devices), grid,
                      cfg.seeds, costs._asdict())
