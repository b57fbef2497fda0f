"""Compact text tables of a run: mean +/- std over seeds of the headline metrics, per
generation, and per grid point at the last generation."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import xarray as xr


def summary_rows(generations: int, most: int = 12) -> list[int]:
    """At most ``most`` generations, evenly spread, always the first and the last."""
    if generations <= most:
        return list(range(generations))
    return sorted({int(round(g)) for g in np.linspace(0, generations - 1, most)})


def _cell(mean: float, std: float) -> str:
    return f"{mean:.4g} ± {std:.2g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Right-aligned columns, each at least two spaces from the next, whatever the widths."""
    widths = [max(len(r[i]) for r in [header, *rows]) + (2 if i else 0)
              for i in range(len(header))]
    return ["".join(f"{c:>{w}}" for c, w in zip(row, widths)) for row in [header, *rows]]


def format_summary(ds: xr.Dataset, metrics: Sequence[str], most: int = 12) -> str:
    """The table as text; extra dims (swept settings) are averaged over with the seeds."""
    cells = {}
    for name in metrics:
        da = ds[name]
        others = [d for d in da.dims if d != "generation"]
        cells[name] = (da.mean(others).values, da.std(others).values)
    rows = [[str(int(ds["generation"][g]))] + [_cell(cells[m][0][g], cells[m][1][g])
                                                for m in metrics]
            for g in summary_rows(ds.sizes["generation"], most)]
    lanes = int(np.prod([ds.sizes[d] for d in ds[metrics[0]].dims if d != "generation"]))
    return "\n".join(_table(["generation", *metrics], rows)
                     + [f"(mean ± std over {lanes} lanes)"])


def format_points(ds: xr.Dataset, metrics: Sequence[str], grid_dims: Sequence[str]) -> str:
    """The last generation's mean +/- std over seeds at every point of a grid."""
    last = ds.isel(generation=-1)
    rows = []
    for values in itertools.product(*(ds[d].values for d in grid_dims)):
        point = last.sel(dict(zip(grid_dims, values)))
        rows.append([" ".join(f"{d}={v:g}" for d, v in zip(grid_dims, values))]
                    + [_cell(float(point[m].mean()), float(point[m].std())) for m in metrics])
    generation = int(last["generation"])
    return "\n".join(_table([f"generation {generation} at", *metrics], rows)
                     + [f"(mean ± std over {ds.sizes['seed']} seeds)"])


def format_divergence(ds: xr.Dataset) -> str | None:
    """How many lanes diverged and where first (None if none did or none can)."""
    if "diverged" not in ds or not bool(ds["diverged"].any()):
        return None
    final = ds["diverged"].isel(generation=-1)
    by_generation = ds["diverged"].max([d for d in ds["diverged"].dims if d != "generation"])
    first = int(ds["generation"][int(np.argmax(by_generation.values))])
    return (f"diverged: {int(final.sum())} of {final.size} lanes (training loss NaN, inf or "
            f"above train.diverged_loss; their metrics are NaN from then on), the first at "
            f"generation {first}")
