"""Statistics over seeds: mean, standard error, bootstrap confidence intervals, and paired
comparisons of swept values (Wilcoxon signed-rank with Holm's correction).

Lanes are independent replicates, so every statistic here is over the ``seed`` dim; the
lanes of different swept values share their seeds, so comparisons are paired by seed.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
import xarray as xr

from analysis.load import swept_dims

SEED = "seed"
LEVEL = 0.95
RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so that the same data give the same intervals (and figures)


def bootstrap_ci(x: np.ndarray, level: float = LEVEL, n_resamples: int = RESAMPLES,
                 rng: np.random.Generator | int = BOOTSTRAP_SEED
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over the last axis of ``x``.

    Each cell resamples its own finite values (NaNs are left out). Returns (low, high) of
    shape ``x.shape[:-1]``; NaN where fewer than two values are finite. The percentile
    interval is about mean +- z s / sqrt(n) (s with divisor n), so with few seeds it is
    too narrow: about 0.94 coverage at 50 normal seeds, 0.85 at 5.
    """
    rng = np.random.default_rng(rng)
    x = np.asarray(x, np.float64)
    cells_CxS = x.reshape(-1, x.shape[-1])
    finite_CxS = np.isfinite(cells_CxS)
    n_C = finite_CxS.sum(-1)
    # finite values first in each row: a row of n finite values resamples [0, n)
    order_CxS = np.argsort(~finite_CxS, axis=-1, kind="stable")
    values_CxS = np.take_along_axis(cells_CxS, order_CxS, -1)
    low_C = np.full(len(cells_CxS), np.nan)
    high_C = np.full(len(cells_CxS), np.nan)
    alpha = (1 - level) / 2
    for n in np.unique(n_C[n_C >= 2]):  # cells with the same count resample together
        rows = np.flatnonzero(n_C == n)
        flat = values_CxS[rows, :n].ravel()
        row_start_Rx1 = (np.arange(len(rows)) * n)[:, None]
        batch = max(1, int(2e7 // flat.size))  # bound memory: batch x R x n indices
        means_BxR = np.concatenate([
            flat[rng.integers(0, n, size=(min(batch, n_resamples - b), len(rows), n))
                 + row_start_Rx1].mean(-1)
            for b in range(0, n_resamples, batch)])
        low_C[rows], high_C[rows] = np.quantile(means_BxR, [alpha, 1 - alpha], axis=0)
    return low_C.reshape(x.shape[:-1]), high_C.reshape(x.shape[:-1])


def seed_summary(da: xr.DataArray, level: float = LEVEL, n_resamples: int = RESAMPLES
                 ) -> xr.Dataset:
    """``mean``, ``sem`` (standard error), ``ci_low``, ``ci_high`` and ``count`` (finite seeds)
    over the seed dim of ``da``, for every other coordinate (generation, swept point, ...)."""
    x = da.transpose(..., SEED)
    values = np.asarray(x.values, np.float64)
    n = np.sum(np.isfinite(values), axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
        mean = np.nanmean(values, axis=-1)
        sd = np.nanstd(values, axis=-1, ddof=1)
    sem = np.where(n >= 2, sd / np.sqrt(np.maximum(n, 1)), np.nan)
    low, high = bootstrap_ci(values, level, n_resamples)
    dims = x.dims[:-1]
    coords = {k: v for k, v in x.coords.items() if SEED not in v.dims}
    ci = f"{level:.0%} bootstrap interval"
    return xr.Dataset({
        "mean": (dims, mean, {"long_name": "mean over seeds"}),
        "sem": (dims, sem, {"long_name": "standard error of the mean"}),
        "ci_low": (dims, low, {"long_name": f"lower end of the {ci}"}),
        "ci_high": (dims, high, {"long_name": f"upper end of the {ci}"}),
        "count": (dims, n, {"long_name": "seeds with a finite value"}),
    }, coords=coords, attrs=dict(da.attrs))


def slopes(da: xr.DataArray) -> xr.DataArray:
    """The least-squares slope of ``da`` against generation (its change per generation),
    for every seed and other coordinate, over the generations at which it has a value
    (from generation 1 for a metric with none at generation 0, such as agreement with a
    teacher); NaN where fewer than two generations are left or a fitted value is NaN."""
    others = [d for d in da.dims if d != "generation"]
    y = da.isel(generation=np.flatnonzero(da.notnull().any(others).values))
    g = y["generation"].astype(np.float64)
    if y.sizes["generation"] < 2:
        return (da.isel(generation=0, drop=True) * np.nan).astype(np.float64)
    centred = g - g.mean()
    slope = ((y - y.mean("generation")) * centred).sum("generation", skipna=False)
    return (slope / float((centred ** 2).sum())).assign_attrs(da.attrs)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), NaNs left out and kept.

    For sorted p_(1) <= ... <= p_(m): adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(p, np.float64)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def wilcoxon(x_S: np.ndarray, y_S: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired samples (pairs with a NaN left out).

    Returns (W statistic, p); p = 1 when every difference is zero, NaN without pairs.
    """
    d = np.asarray(x_S, np.float64) - np.asarray(y_S, np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan"), float("nan")
    if np.all(d == 0):
        return 0.0, 1.0
    result = scipy.stats.wilcoxon(d)
    return float(result.statistic), float(result.pvalue)


def point_label(point: dict[str, Any]) -> str:
    """A swept point as ``key=value, key=value``."""
    return ", ".join(f"{k}={v}" for k, v in point.items())


def paired_comparisons(da: xr.DataArray, dim: str, generation: int | None,
                       pairs: list[tuple[Any, Any]] | None = None) -> pd.DataFrame:
    """Every pair (a, b) of values of the swept ``dim`` compared at ``generation`` (None:
    ``da`` has no generation dim, e.g. ``slopes``), paired by seed, at every point of the
    other swept dims, Holm-corrected across the table.

    Columns: ``a``, ``b``, ``at`` (the other swept dims), ``n`` (pairs), ``mean_diff``
    (mean of a - b), ``median_diff``, ``W``, ``p``, ``p_holm``.
    """
    x = da if generation is None else da.sel(generation=generation)
    x = x.squeeze([d for d in x.dims if d not in (SEED, dim) and x.sizes[d] == 1], drop=True)
    if pairs is None:
        pairs = list(itertools.combinations(x[dim].values.tolist(), 2))
    others = [d for d in x.dims if d not in (SEED, dim)]
    points = [dict(zip(others, values)) for values in
              itertools.product(*(x[d].values.tolist() for d in others))]
    rows = []
    for point in points:
        at = x.sel(point)
        for a, b in pairs:
            xa = at.sel({dim: a}).transpose(SEED).values
            xb = at.sel({dim: b}).transpose(SEED).values
            d = np.asarray(xa, np.float64) - np.asarray(xb, np.float64)
            d = d[np.isfinite(d)]
            w, p = wilcoxon(xa, xb)
            rows.append({"a": a, "b": b, "at": point_label(point), "n": len(d),
                         "mean_diff": float(np.mean(d)) if len(d) else np.nan,
                         "median_diff": float(np.median(d)) if len(d) else np.nan,
                         "W": w, "p": p})
    table = pd.DataFrame(rows, columns=["a", "b", "at", "n", "mean_diff", "median_diff",
                                        "W", "p"])
    table["p_holm"] = holm(table["p"].to_numpy())
    return table


def varies_over_seeds(da: xr.DataArray) -> bool:
    """Whether some seeds of ``da`` differ at some point (NaN aside): not a value the
    config fixes, such as ``params`` or ``train_flops``."""
    spread = da.max(SEED, skipna=True) - da.min(SEED, skipna=True)
    return bool((spread > 0).any())


def comparison_table(ds: xr.Dataset, metrics: list[str], dim: str, generation: int | None
                     ) -> pd.DataFrame:
    """``paired_comparisons`` of every scalar metric in ``metrics`` along ``dim``, as one
    table (a ``metric`` column first) with Holm's correction across all its rows: of their
    values at ``generation``, or with None of their change per generation (``slopes``).
    Metrics the same in every seed (``varies_over_seeds``: costs the config fixes) are left
    out: a test over seeds says nothing of them, and they would only widen Holm's family."""
    swept = set(swept_dims(ds))

    def compared(metric: str) -> xr.DataArray:
        return ds[metric] if generation is not None else slopes(ds[metric])

    tables = [paired_comparisons(compared(m), dim, generation).assign(metric=m)
              for m in metrics
              if all(d in swept or d in ("generation", SEED) for d in ds[m].dims)
              and varies_over_seeds(ds[m])]
    if not tables:
        return pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    table["p_holm"] = holm(table["p"].to_numpy())
    return table[["metric", *[c for c in table.columns if c != "metric"]]]


def comparison_dim(ds: xr.Dataset) -> str | None:
    """The first swept dim with at least two values (what a comparison table compares)."""
    for dim in swept_dims(ds):
        if ds.sizes[dim] >= 2:
            return dim
    return None
