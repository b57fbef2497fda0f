"""One experiment: build (validate everything), run the lanes, return the results Dataset.

This is the importable function behind ``python -m sim``; tests call it directly.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, NamedTuple

import jax.numpy as jnp
import xarray as xr
from omegaconf import OmegaConf

from sim.chain import Chain
from sim.config import Config
from sim.distill import dynamic_settings
from sim.distill import validate as validate_distill
from sim.errors import require
from sim.lanes import lane_keys, resolve_strategy, run_lanes
from sim.metrics.retention import RETENTION_INFO, relative_metrics, retention_metrics
from sim.mix import make_mix
from sim.record import run_attrs, to_dataset
from sim.worlds import make_world


class Experiment(NamedTuple):
    cfg: Config
    chain: Chain
    dyn: dict[str, float]  # dynamic settings shared by every lane of this run


def build(cfg: Config) -> Experiment:
    """Check every setting and build the chain; raises ConfigError before any compute."""
    require(cfg.generations >= 0, "generations", cfg.generations, "an integer >= 0")
    require(cfg.seeds >= 1, "seeds", cfg.seeds, "an integer >= 1")
    resolve_strategy(cfg.lanes)
    validate_distill(cfg.distill, cfg.sampling, cfg.train, cfg.student)
    world = make_world(cfg.world, cfg.distill, cfg.sampling, cfg.train, cfg.student)
    mix = make_mix(cfg.mix, world.n_samples, cfg.generations, world.min_rows)
    dyn = {"mix.real_fraction": cfg.mix.real_fraction,
           **dynamic_settings(cfg.distill, cfg.sampling, cfg.train)}
    return Experiment(cfg, Chain(world, mix), dyn)


def run(experiment: Experiment, swept: Mapping[str, Any] | None = None,
        config_yaml: str | None = None) -> xr.Dataset:
    """Run all lanes of a built experiment; ``swept`` becomes length-1 coordinates."""
    cfg = experiment.cfg
    start = time.perf_counter()
    dyn_S = {k: jnp.full(cfg.seeds, v, jnp.float32) for k, v in experiment.dyn.items()}
    metrics = run_lanes(experiment.chain, lane_keys(cfg.seed, cfg.seeds), dyn_S,
                        cfg.generations, cfg.lanes, cfg.progress)
    wall = time.perf_counter() - start
    world = experiment.chain.world
    info = dict(world.metric_info)
    if world.retention_of is not None:
        metrics.update(retention_metrics(metrics, *world.retention_of))
        info.update(RETENTION_INFO)
    relative = getattr(world, "relative_metrics", {})  # optional in the World protocol
    metrics.update(relative_metrics(metrics, relative))
    info.update({name: r.info for name, r in relative.items()})
    if config_yaml is None:
        config_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    return to_dataset(metrics, info, swept, run_attrs(config_yaml, wall))
