"""The Hydra app: compose the config, run the experiment, write ``results.nc``, summarise.

Bad input exits with status 2 and one line on stderr, and removes the run directory that
Hydra made for it, so nothing half-written stays under ``runs/``.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sim import experiment
from sim import grid as grids
from sim.config import register_configs, to_config
from sim.errors import ConfigError
from sim.record import write_atomic
from sim.summary import format_divergence, format_points, format_summary

RESULTS = "results.nc"
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _sweep_keys(sweep_dir: Path) -> set[str] | None:
    """Keys the multirun sweeps over (several values), read from its multirun.yaml."""
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return None
    task = OmegaConf.load(path).hydra.overrides.task
    parsed = OverridesParser.create().parse_overrides(list(task))
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def swept_values(cfg: DictConfig) -> dict[str, Any]:
    """In a multirun, the swept settings of this job as {config key: value}.

    The swept keys come from the sweep's multirun.yaml; where a sweeper writes none,
    every command-line override of the job counts as swept.
    """
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return {}
    sweep_keys = _sweep_keys(Path(hydra_cfg.sweep.dir))
    swept = {}
    for override in hydra_cfg.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if sweep_keys is not None and key not in sweep_keys:
            continue
        if key in hydra_cfg.runtime.choices:
            swept[key] = hydra_cfg.runtime.choices[key]
        else:
            swept[key] = OmegaConf.select(cfg, key, throw_on_missing=False)
    return swept


def _remove_run_dir(out_dir: Path) -> None:
    """Remove a failed run's directory and the parents it leaves empty (up to cwd)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    parent, stop = out_dir.parent, Path.cwd().resolve()
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        lone = parent / "multirun.yaml"
        if lone.exists() and [p.name for p in parent.iterdir()] == ["multirun.yaml"]:
            lone.unlink()
    while parent.resolve() != stop and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


register_configs()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    logging.getLogger("jax").setLevel(logging.WARNING)  # no "Unable to initialize 'tpu'"
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        built = experiment.build(to_config(cfg))
    except ConfigError as error:
        _remove_run_dir(out_dir)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    ds = experiment.run(built, swept_values(cfg), OmegaConf.to_yaml(cfg))
    path = write_atomic(ds, out_dir / RESULTS)
    headline = built.chain.world.headline + (
        ("kept_fraction", "verifier_precision") if built.chain.curation else ())
    print(format_summary(ds, headline))
    if built.grid:
        print(format_points(ds, headline, [key for key, _ in built.grid]))
    divergence = format_divergence(ds)
    if divergence:
        print(divergence)
    points = f" x {len(grids.points(built.grid))} points" if built.grid else ""
    print(f"wrote {path} in {ds.attrs['wall_time_s']:.1f} s "
          f"({ds.attrs['backend']}, {ds.sizes['seed']} seeds{points})")
