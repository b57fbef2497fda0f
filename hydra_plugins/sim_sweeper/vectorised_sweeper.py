"""A Hydra sweeper that runs sweeps over traced settings as lanes of one job.

``python -m sim -m sampling.temperature=0.5,1.0 mix=fresh mix.real_fraction=0,0.5 seeds=8``
sweeps two traced settings (``sim.grid.TRACED_KEYS``): instead of four jobs, the sweeper
launches ONE job with ``grid.sampling.temperature=[0.5,1.0] grid.mix.real_fraction=[0.0,0.5]``,
whose 4 points x 8 seeds run as lanes of one compiled program and whose ``results.nc`` has
a dimension per traced key. Every other sweep (world, mix policy, sizes, steps, objective)
makes separate jobs as Hydra's basic sweeper does, handed to the configured launcher; each
of them runs the whole grid of traced values. ``hydra.sweeper.vectorise=false`` runs one
job per point instead, as the basic sweeper would.

A rerun into a sweep directory whose jobs refuse it (another config's finished or
checkpointed runs: ``sim.rundir``) leaves the sweep's ``multirun.yaml`` as it was: the basic
sweeper writes it before the first job starts, and ``sim.cli`` reads the swept keys from it.

No ``from __future__ import annotations`` here: Hydra loads plugins outside ``sys.modules``,
where dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

# neither imports JAX: loading Hydra's plugins must not start it
from sim.files import replacing
from sim.grid import TRACED_KEYS


@dataclass
class VectorisedSweeperConf:
    _target_: str = "hydra_plugins.sim_sweeper.vectorised_sweeper.VectorisedSweeper"
    max_batch_size: Optional[int] = None  # jobs handed to the launcher at once (None: all)
    params: Optional[Dict[str, str]] = None  # sweeps given in the config instead of the CLI
    vectorise: bool = True  # false: one job per point of the traced keys too


ConfigStore.instance().store(group="hydra/sweeper", name="vectorised",
                             node=VectorisedSweeperConf, provider="sim")


def grid_overrides(traced: List[Override]) -> List[str]:
    """The ``grid.<key>=[values]`` overrides of one job for the traced sweeps."""
    overrides = []
    for override in traced:
        key, values = override.get_key_element(), []
        for value in override.sweep_string_iterator():
            try:
                values.append(repr(float(value)))
            except ValueError:
                raise HydraException(f"{key}={value} is not allowed: a number (a traced "
                                     "setting)") from None
        overrides.append(f"grid.{key}=[{','.join(values)}]")
    return overrides


class VectorisedSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None,
                 params: Optional[Dict[str, str]] = None, vectorise: bool = True) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.vectorise = vectorise

    def sweep(self, arguments: List[str]) -> Any:
        """The basic sweeper's sweep; a sweep whose job refuses it (exit status 2, before
        it writes anything) puts back the ``multirun.yaml`` the sweep directory had."""
        record = Path(self.config.hydra.sweep.dir) / "multirun.yaml"
        before = record.read_bytes() if record.exists() else None
        try:
            return super().sweep(arguments)
        except SystemExit as refused:
            if refused.code == 2 and before is not None:
                with replacing(record) as partial:
                    partial.write_bytes(before)
            raise

    def split_arguments(self, overrides: List[Override],  # type: ignore[override]
                        max_batch_size: Optional[int]) -> List[List[List[str]]]:
        """Batches of jobs' overrides: the basic sweeper's product over the untraced
        sweeps, each job carrying the traced sweeps as ``grid`` overrides."""
        traced = [o for o in overrides if self.vectorise and o.is_sweep_override()
                  and o.is_discrete_sweep() and o.get_key_element() in TRACED_KEYS]
        rest = [o for o in overrides if o not in traced]
        batches = BasicSweeper.split_arguments(rest, max_batch_size)
        if not traced:
            return batches
        grid = grid_overrides(traced)
        return [[job + grid for job in batch] for batch in batches]
