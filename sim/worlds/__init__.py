"""The registry of worlds: config schema and implementation by name."""

from __future__ import annotations

from typing import Callable, NamedTuple

from sim.errors import ConfigError
from sim.worlds.base import MetricInfo, World, WorldConfig
from sim.worlds.gaussian import GaussianConfig, GaussianWorld
from sim.worlds.gmm import GmmConfig, GmmWorld
from sim.worlds.linreg import LinregConfig, LinregWorld


class WorldEntry(NamedTuple):
    config: type[WorldConfig]
    build: Callable[..., World]


WORLDS: dict[str, WorldEntry] = {
    "gaussian": WorldEntry(GaussianConfig, GaussianWorld),
    "gmm": WorldEntry(GmmConfig, GmmWorld),
    "linreg": WorldEntry(LinregConfig, LinregWorld),
}


def make_world(cfg: WorldConfig) -> World:
    """Validate a world config and build its world."""
    for entry in WORLDS.values():
        if type(cfg) is entry.config:
            return entry.build(cfg)
    raise ConfigError(f"world of type {type(cfg).__name__} is not allowed: one of "
                      f"{', '.join(WORLDS)}")


__all__ = ["WORLDS", "MetricInfo", "World", "WorldConfig", "make_world"]
