"""Results as xarray: the only place that names dimensions and writes files.

A run's Dataset has dims ``generation`` (0..G; 0 = fitted on real data) and ``seed`` (the
lane index), one variable per metric with ``long_name``, ``description`` and ``units``
where it has one, every key of a grid of traced settings (run as lanes) as a dimension,
and every other swept parameter of a multirun as a length-1 dimension, each named by its
config key (but a swept base ``seed``: ``base_seed``), so the runs of one sweep combine with
``xr.combine_by_coords``.
"""

from __future__ import annotations

import enum
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
import xarray as xr

from sim.files import replacing
from sim.grid import Grid
from sim.grid import shape as grid_shape
from sim.worlds.base import MetricInfo

PACKAGES = ("sim", "jax", "jaxlib", "flax", "optax", "numpy", "xarray", "hydra-core", "h5netcdf")


def coordinate_value(value: Any) -> Any:
    """A config value as a NetCDF-friendly coordinate value."""
    if isinstance(value, enum.Enum):
        return value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def _by_point(values: np.ndarray, grid: Grid, seeds: int) -> np.ndarray:
    """(G + 1, points x seeds, *rest) with point-major lanes -> (G + 1, seeds, *rest, *grid)."""
    k = len(grid)
    values = values.reshape(values.shape[:1] + grid_shape(grid) + (seeds,) + values.shape[2:])
    return np.moveaxis(values, tuple(range(1, 1 + k)), tuple(range(-k, 0)))


COST_INFO = {
    "wall_time_s": MetricInfo(
        "wall time", "s", "seconds the generation took for every lane of the run, compiling "
        "included (the run's total is the sum; the attr wall_time_s adds loading and "
        "recording)"),
    "peak_memory_bytes": MetricInfo(
        "peak memory", "bytes", "high-water mark of memory use at the end of the generation: "
        "the device allocator's peak on accelerators, the process's peak resident memory on "
        "CPU"),
}


def to_dataset(metrics: Mapping[str, np.ndarray], info: Mapping[str, MetricInfo],
               swept: Mapping[str, Any] | None = None,
               attrs: Mapping[str, Any] | None = None, grid: Grid = (),
               seeds: int | None = None,
               costs: Mapping[str, np.ndarray] | None = None) -> xr.Dataset:
    """Metrics of shape (G + 1, lanes, *metric dims) as a Dataset; with a ``grid``, lanes
    are point-major (``sim.grid``) and each grid key becomes a dimension. ``costs`` are the
    run's per-generation ``COST_INFO`` variables, shape (G + 1,): they have no seed dim.

    Dims: (generation, seed, *the metric's own dims, *grid keys, *swept keys).
    """
    data_vars, coords = {}, {}
    for name, values in metrics.items():
        meta = info[name]
        values = np.asarray(values)
        if grid:
            values = _by_point(values, grid, seeds)
        var_attrs = {"long_name": meta.long_name, "description": meta.description}
        if meta.units:
            var_attrs["units"] = meta.units
        grid_dims = tuple(key for key, _ in grid)
        data_vars[name] = (("generation", "seed", *meta.dims, *grid_dims), values, var_attrs)
        for i, dim in enumerate(meta.dims):
            size = values.shape[2 + i]
            coords[dim] = np.asarray(meta.coords[i]) if meta.coords else np.arange(size)
    for name, values in (costs or {}).items():
        meta = COST_INFO[name]
        data_vars[name] = (("generation",), np.asarray(values),
                           {"long_name": meta.long_name, "description": meta.description,
                            "units": meta.units})
    generations, lanes = next(iter(metrics.values())).shape[:2]
    coords.update(generation=np.arange(generations), seed=np.arange(seeds or lanes))
    coords.update({key: np.asarray(values) for key, values in grid})
    ds = xr.Dataset(data_vars, coords=coords, attrs=dict(attrs or {}))
    ds["generation"].attrs["long_name"] = "generation (0 = fitted on real data)"
    ds["seed"].attrs["long_name"] = "lane index (key = fold_in(key(seed), index))"
    for key, value in (swept or {}).items():
        dim = "base_seed" if key == "seed" else key  # "seed" is the lane index
        ds = ds.expand_dims({dim: [coordinate_value(value)]}, axis=-1)
    return ds


def _git(*args: str) -> str | None:
    """A git command's output in the package's checkout (None outside one)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> str:
    found = []
    for package in PACKAGES:
        try:
            found.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return " ".join(found + [f"python=={platform.python_version()}"])


def run_attrs(config_yaml: str, wall_time_s: float, device_count: int) -> dict[str, Any]:
    """Provenance attrs: config, versions, git commit (and whether the checkout had
    uncommitted changes), backend, device, the devices the lanes split across, wall time."""
    device = jax.devices()[0]
    return {
        "config": config_yaml,
        "versions": _versions(),
        "git_commit": _git("rev-parse", "HEAD") or "",
        # 1: the checkout had uncommitted changes, so git_commit alone does not rerun it
        "git_dirty": int(bool(_git("status", "--porcelain", "--untracked-files=no"))),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": int(device_count),
        "wall_time_s": float(wall_time_s),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_atomic(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write NetCDF to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return path
