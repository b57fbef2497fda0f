"""Typed configuration: frozen dataclasses that are also the Hydra schemas.

``conf/*.yaml`` mirrors these classes; Hydra rejects an unknown key or a wrongly typed value
while composing, before anything runs. The core receives these dataclasses, never a
DictConfig. Checks that need several values at once (a sample size against a dimension)
run when the experiment is built (``sim.experiment.build``), still before any compute.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from sim.checkpoint import CheckpointConfig
from sim.curation import FilterConfig
from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
from sim.exposure import DefenseConfig, ExposureConfig
from sim.grid import GridConfig
from sim.lanes import LanesConfig
from sim.mix import MixConfig
from sim.teacher import TeacherConfig
from sim.worlds import WORLDS, WorldConfig


@dataclass(frozen=True)
class Config:
    world: WorldConfig = MISSING  # chosen by the `world` group: gaussian, gmm, linreg, ...
    mix: MixConfig = field(default_factory=MixConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)  # curation of synthetic data
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # who teaches generation g
    distill: DistillConfig = field(default_factory=DistillConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    exposure: ExposureConfig = field(default_factory=ExposureConfig)  # what a teacher reveals
    defense: DefenseConfig = field(default_factory=DefenseConfig)  # how it perturbs it
    lanes: LanesConfig = field(default_factory=LanesConfig)
    # After each finished generation the run directory holds a checkpoint (sim/checkpoint.py);
    # rerunning the command with hydra.run.dir=<that directory> resumes from it.
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    generations: int = 10  # G: generations after generation 0 (which fits real data)
    seeds: int = 8  # independent chains, run as lanes of one compiled program
    seed: int = 0  # base seed: lane i uses fold_in(key(seed), i)
    # Traced settings swept as lanes of this one program (grid.sampling.temperature=[0.5,1]):
    # every point of the product runs `seeds` lanes, each swept key is a dimension of the
    # results, and takes its values from here, not from its own setting. `python -m sim -m`
    # fills it from comma-separated sweeps of traced keys (hydra_plugins/sim_sweeper).
    grid: GridConfig = field(default_factory=GridConfig)
    progress: bool = True  # show a progress bar over generations
    compile_cache: bool = True  # JAX's persistent compilation cache (sim/compile_cache.py)
    compile_cache_dir: Optional[str] = None  # None: $XDG_CACHE_HOME/sim/jax (~/.cache/...)


def _writable(node: DictConfig) -> DictConfig:
    """Frozen dataclasses make read-only nodes; Hydra must merge into the schema."""
    OmegaConf.set_readonly(node, None)
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _writable(child)
        else:
            OmegaConf.set_readonly(child, None)
    return node


def schema(cls: type) -> DictConfig:
    return _writable(OmegaConf.structured(cls))


def register_configs() -> None:
    """Register the schemas that conf/*.yaml extend (``/schema_<what>@_here_``): as configs
    outside any group, so that ``--help`` lists only the groups users choose from."""
    store = ConfigStore.instance()
    store.store(name="schema_config", node=schema(Config))
    store.store(name="schema_mix", node=schema(MixConfig))
    store.store(name="schema_distill", node=schema(DistillConfig))
    store.store(name="schema_exposure", node=schema(ExposureConfig))
    store.store(name="schema_defense", node=schema(DefenseConfig))
    store.store(name="schema_filter", node=schema(FilterConfig))
    store.store(name="schema_teacher", node=schema(TeacherConfig))
    for name, entry in WORLDS.items():
        store.store(name=f"schema_world_{name}", node=schema(entry.config))


def _tuples(obj: Any) -> Any:
    """OmegaConf turns tuple fields into lists; turn them back, so configs stay hashable."""
    if not dataclasses.is_dataclass(obj):
        return tuple(obj) if isinstance(obj, list) else obj
    return dataclasses.replace(obj, **{f.name: _tuples(getattr(obj, f.name))
                                       for f in dataclasses.fields(obj) if f.init})


def to_config(cfg: DictConfig) -> Config:
    """The typed config of a composed DictConfig (tuple fields as tuples)."""
    return _tuples(OmegaConf.to_object(cfg))
