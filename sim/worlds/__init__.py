"""The registry of worlds: config schema and implementation by name."""

from __future__ import annotations

from typing import Callable, NamedTuple

from sim.distill import (DistillConfig, SamplingConfig, StudentConfig, TrainConfig,
                         check_closed_form)
from sim.errors import ConfigError
from sim.exposure import DefenseConfig, ExposureConfig
from sim.exposure import validate as validate_exposure
from sim.worlds.base import MetricInfo, World, WorldConfig
from sim.worlds.categorical import CategoricalConfig, CategoricalWorld
from sim.worlds.digits import DigitsConfig, DigitsWorld
from sim.worlds.gaussian import GaussianConfig, GaussianWorld
from sim.worlds.gmm import GmmConfig, GmmWorld
from sim.worlds.linreg import LinregConfig, LinregWorld
from sim.worlds.markov_lm import MarkovLMConfig, MarkovLMWorld
from sim.worlds.text import TextConfig, TextWorld


class WorldEntry(NamedTuple):
    config: type[WorldConfig]
    build: Callable[..., World]
    closed_form: bool  # fitted by maximum likelihood: built from the world config alone
    distils: bool = False  # models are trained, querying their teacher (exposure applies)
    text: bool = False  # teachers write token sequences (defense=watermark applies)


WORLDS: dict[str, WorldEntry] = {
    "categorical": WorldEntry(CategoricalConfig, CategoricalWorld, closed_form=False),
    "digits": WorldEntry(DigitsConfig, DigitsWorld, closed_form=False, distils=True),
    "gaussian": WorldEntry(GaussianConfig, GaussianWorld, closed_form=True),
    "gmm": WorldEntry(GmmConfig, GmmWorld, closed_form=True),
    "linreg": WorldEntry(LinregConfig, LinregWorld, closed_form=True),
    "markov_lm": WorldEntry(MarkovLMConfig, MarkovLMWorld, closed_form=False, distils=True,
                            text=True),
    "text": WorldEntry(TextConfig, TextWorld, closed_form=False, distils=True, text=True),
}


def world_name(cfg: WorldConfig) -> str:
    """The registry name of a world config's world."""
    for name, entry in WORLDS.items():
        if type(cfg) is entry.config:
            return name
    raise ConfigError(f"world of type {type(cfg).__name__} is not allowed: one of "
                      f"{', '.join(WORLDS)}")


def make_world(cfg: WorldConfig, distill: DistillConfig, sampling: SamplingConfig,
               train: TrainConfig, student: StudentConfig,
               exposure: ExposureConfig = ExposureConfig(),
               defense: DefenseConfig = DefenseConfig()) -> World:
    """Validate a world config (and the distillation settings it uses); build the world."""
    name = world_name(cfg)
    entry = WORLDS[name]
    validate_exposure(exposure, defense, distill.objective, name, entry.distils, entry.text)
    if entry.closed_form:
        check_closed_form(name, distill, sampling, student)
        return entry.build(cfg)
    if not entry.distils:
        return entry.build(cfg, distill, sampling, train, student)
    return entry.build(cfg, distill, sampling, train, student, exposure, defense)


__all__ = ["WORLDS", "MetricInfo", "World", "WorldConfig", "make_world", "world_name"]
