"""Open one run, or every run under a (multirun) directory as one combined Dataset."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

RESULTS = "results.nc"


def load_run(path: str | Path) -> xr.Dataset:
    """A run's Dataset, loaded into memory; ``path`` is results.nc or its run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.exists():
        raise FileNotFoundError(f"no {RESULTS} at {path}")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def load_sweep(directory: str | Path) -> xr.Dataset:
    """Every results.nc under ``directory``, combined along the swept coordinates.

    Attributes that differ between runs (config text, wall time) are dropped; the runs'
    own attributes stay in each results.nc.
    """
    paths = sorted(Path(directory).rglob(RESULTS))
    if not paths:
        raise FileNotFoundError(f"no {RESULTS} under {directory}")
    runs = [load_run(p) for p in paths]
    if len(runs) == 1:
        return runs[0]
    return xr.combine_by_coords(runs, combine_attrs="drop_conflicts")
