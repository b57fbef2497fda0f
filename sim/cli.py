"""The Hydra app: compose the config, run the experiment, write ``results.nc``, summarise.

Bad input exits with status 2 and one line on stderr, and removes the run directory that
Hydra made for it, so nothing half-written stays under ``runs/``. A run directory that
already holds a checkpoint resumes from it (``sim.checkpoint``), and one that holds a
finished ``results.nc`` is skipped (a multirun rerun with the same ``hydra.sweep.dir`` runs
only the jobs that have not finished); either must have been made with the same config.
Ctrl-C (exit 130) or SIGTERM, as a scheduler sends before it stops a job (exit 143),
leaves the last checkpoint and prints the command that resumes the run.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sim import checkpoint, experiment, rundir
from sim import grid as grids
from sim.config import register_configs, to_config
from sim.errors import ConfigError
from sim.record import write_atomic
from sim.rundir import RESULTS
from sim.summary import format_divergence, format_points, format_summary

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


def _resume_command(out_dir: Path) -> str:
    """The command that resumes this run (or, in a multirun, its sweep)."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    hydra_args = [o for o in hydra_cfg.overrides.hydra
                  if o.split("=", 1)[0] not in ("hydra.mode", "hydra.run.dir", "hydra.sweep.dir")]
    if multirun:  # the sweep's own overrides (comma-separated sweeps), not this job's
        sweep_dir = Path(hydra_cfg.sweep.dir).absolute()
        task = list(OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task)
        return shlex.join(["python", "-m", "sim", "-m", *hydra_args, *task,
                           f"hydra.sweep.dir={sweep_dir}"])
    return shlex.join(["python", "-m", "sim", *hydra_args, *hydra_cfg.overrides.task,
                       f"hydra.run.dir={out_dir}"])


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is (as Ctrl-C raises KeyboardInterrupt)."""


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the chain runs, SIGTERM stops it as Ctrl-C does (Python's default would exit
    without a word); signal handlers can only be set from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(error: ConfigError) -> None:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


register_configs()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    logging.getLogger("jax").setLevel(logging.WARNING)  # no "Unable to initialize 'tpu'"
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        _run(cfg, out_dir)
    finally:
        rundir.release(out_dir)


def _run(cfg: DictConfig, out_dir: Path) -> None:
    """The job in its run directory: skip it if finished, resume it from its checkpoint, or
    run it."""
    config_yaml = OmegaConf.to_yaml(cfg)
    results = out_dir / RESULTS
    try:
        claim = rundir.claim(out_dir, config_yaml)  # held already by rundir.CheckOutputDir
    except ConfigError as error:
        _fail(error)  # another process's, or another config's: leave it as it is
    if claim.finished:
        print(f"{results} is complete: nothing to run")
        return
    try:
        built = experiment.build(to_config(cfg))
    except ConfigError as error:
        if claim.fresh:
            _remove_run_dir(out_dir)  # made for this run: leave nothing under runs/
        _fail(error)
    save = None
    if built.cfg.checkpoint.enabled:
        save = checkpoint.Writer(out_dir, config_yaml, built.cfg.checkpoint.interval_s)
    try:
        with _sigterm_interrupts():
            ds = experiment.run(built, swept_values(cfg), config_yaml, claim.saved, save)
    except KeyboardInterrupt as interrupt:
        if not (out_dir / checkpoint.DIRECTORY / checkpoint.FILE).exists():
            print("interrupted before its first checkpoint: nothing to resume",
                  file=sys.stderr)
        else:
            print(f"interrupted; resume with: {_resume_command(out_dir)}", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if isinstance(interrupt, _Terminated) else signal.SIGINT))
    path = write_atomic(ds, results)
    if not built.cfg.checkpoint.keep:
        checkpoint.remove(out_dir)
    headline = built.chain.world.headline + (
        ("kept_fraction", "verifier_precision") if built.chain.curation else ()) + (
        ("synthetic_count",) if built.chain.mix.counts else ())
    print(format_summary(ds, headline))
    if built.grid:
        print(format_points(ds, headline, [key for key, _ in built.grid]))
    divergence = format_divergence(ds)
    if divergence:
        print(divergence)
    points = f" x {len(grids.points(built.grid))} points" if built.grid else ""
    print(f"wrote {path} in {ds.attrs['wall_time_s']:.1f} s "
          f"({ds.attrs['backend']}, {ds.sizes['seed']} seeds{points})")
