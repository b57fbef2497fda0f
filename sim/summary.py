"""A compact per-generation table: mean +/- std over seeds of the headline metrics."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr


def summary_rows(generations: int, most: int = 12) -> list[int]:
    """At most ``most`` generations, evenly spread, always the first and the last."""
    if generations <= most:
        return list(range(generations))
    return sorted({int(round(g)) for g in np.linspace(0, generations - 1, most)})


def format_summary(ds: xr.Dataset, metrics: Sequence[str], most: int = 12) -> str:
    """The table as text; extra dims (swept settings) are averaged over with the seeds."""
    cells = {}
    for name in metrics:
        da = ds[name]
        others = [d for d in da.dims if d != "generation"]
        cells[name] = (da.mean(others).values, da.std(others).values)
    width = max(18, *(len(m) + 2 for m in metrics))
    lines = ["generation" + "".join(f"{m:>{width}}" for m in metrics)]
    for g in summary_rows(ds.sizes["generation"], most):
        row = "".join(f"{f'{cells[m][0][g]:.4g} ± {cells[m][1][g]:.2g}':>{width}}"
                      for m in metrics)
        lines.append(f"{int(ds['generation'][g]):>10}{row}")
    lanes = int(np.prod([ds.sizes[d] for d in ds[metrics[0]].dims if d != "generation"]))
    lines.append(f"(mean ± std over {lanes} lanes)")
    return "\n".join(lines)
