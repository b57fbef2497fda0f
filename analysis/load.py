"""Open one run, or every run under a (multirun) directory as one combined Dataset.

A sweep's jobs are the directories under it that Hydra has started (they hold ``.hydra/``);
``results.nc`` is written atomically when a job ends, so a job directory without it is a
job still running (or one that failed).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import xarray as xr

RESULTS = "results.nc"
CORE_DIMS = ("generation", "seed")


class Runs(NamedTuple):
    """What a directory holds: finished results files and job directories without one."""

    results: list[Path]
    pending: list[Path]


def find_runs(directory: str | Path) -> Runs:
    """The results.nc files under ``directory`` and its started jobs that have none yet."""
    directory = Path(directory)
    results = sorted(directory.rglob(RESULTS))
    jobs = {d.parent for d in directory.rglob(".hydra") if d.is_dir()}
    pending = sorted(job for job in jobs if not (job / RESULTS).exists())
    return Runs(results, pending)


def load_run(path: str | Path) -> xr.Dataset:
    """A run's Dataset, loaded into memory; ``path`` is results.nc or its run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.exists():
        raise FileNotFoundError(f"no {RESULTS} at {path}")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def run_attrs(path: str | Path) -> dict:
    """A results.nc's attrs (config, provenance), without reading its data."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return dict(ds.attrs)


def load_sweep(directory: str | Path) -> xr.Dataset:
    """Every finished results.nc under ``directory``, combined along the swept coordinates.

    Jobs still running (no results.nc yet) are skipped. Attributes that differ between
    runs (config text, wall time) are dropped; the runs' own attributes stay in each
    results.nc.
    """
    paths = find_runs(directory).results
    if not paths:
        raise FileNotFoundError(f"no {RESULTS} under {directory}")
    return combine_runs(paths)


def combine_runs(paths: list[Path]) -> xr.Dataset:
    """These results.nc files as one Dataset, joined along their swept coordinates."""
    runs = [load_run(p) for p in paths]
    if len(runs) == 1:
        return runs[0]
    return xr.combine_by_coords(runs, join="outer", combine_attrs="drop_conflicts")


def metric_names(ds: xr.Dataset) -> list[str]:
    """The per-seed metrics: every variable with a seed dim (not the run's per-generation
    costs, ``wall_time_s`` and ``peak_memory_bytes``)."""
    return [str(name) for name, v in ds.data_vars.items() if "seed" in v.dims]


def swept_dims(ds: xr.Dataset) -> list[str]:
    """Dims of the swept config keys: those every metric has, but generation and seed.

    A multirun of separate jobs gives each swept key a length-1 dim per job; settings swept
    inside one job are dims of any length. Dims only some metrics have (``n``, ``rank``)
    are the metrics' own.
    """
    metrics = [ds[name] for name in metric_names(ds)]
    return [str(d) for d in ds.dims
            if d not in CORE_DIMS and all(d in v.dims for v in metrics)]


def own_dims(da: xr.DataArray, ds: xr.Dataset) -> list[str]:
    """A metric's own dims (e.g. ``n`` of distinct_n): neither core nor swept."""
    swept = set(swept_dims(ds))
    return [str(d) for d in da.dims if d not in CORE_DIMS and d not in swept]
