"""Figures of a run or sweep Dataset: each function takes the Dataset and returns a
matplotlib Figure in the house style (``analysis.style``).

Lines are means over seeds with 95% bootstrap bands (``analysis.stats.seed_summary``); one
line per point of the swept dims that have more than one value (colour: the first such dim,
line style: the second).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import xarray as xr
import yaml
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.load import own_dims, swept_dims
from analysis.stats import seed_summary
from analysis.style import LINESTYLES, MARKERS, SEQUENTIAL, colour, figure, label, styled

BIAS_METRICS = ("trait_rate", "trait_probability", "prior_bias", "majority_share",
                "group_accuracy_gap", "demographic_parity_gap", "equalized_odds_gap",
                "subliminal_accuracy")
BAND_ALPHA = 0.2


# ----------------------------------------------------------------------------- helpers

def varied_dims(ds: xr.Dataset | xr.DataArray, dataset: xr.Dataset | None = None) -> list[str]:
    """Swept dims with more than one value (those that tell lines or panels apart)."""
    reference = dataset if dataset is not None else ds
    return [d for d in swept_dims(reference) if d in ds.dims and ds.sizes[d] > 1]


def points(ds: xr.Dataset | xr.DataArray, dims: list[str]) -> list[dict[str, Any]]:
    """Every combination of the values of ``dims``, as ``{dim: value}`` selections."""
    return [dict(zip(dims, values))
            for values in itertools.product(*(ds[d].values.tolist() for d in dims))]


def _fixed(da: xr.DataArray, ds: xr.Dataset) -> xr.DataArray:
    """``da`` without its length-1 swept dims."""
    return da.squeeze([d for d in swept_dims(ds) if d in da.dims and da.sizes[d] == 1],
                      drop=True)


def _line_style(point: dict[str, Any], ds: xr.Dataset | xr.DataArray) -> dict[str, Any]:
    """Colour from the point's index along its first dim, line style from the second."""
    index = [ds[d].values.tolist().index(v) for d, v in point.items()]
    return {"color": colour(index[0] if index else 0),
            "linestyle": LINESTYLES[index[1] % len(LINESTYLES)] if len(index) > 1 else "-"}


def _marker_style(point: dict[str, Any], ds: xr.Dataset | xr.DataArray) -> dict[str, Any]:
    """As ``_line_style``, with the second dim's index as a marker shape instead (the first
    dim's where there is one)."""
    index = [ds[d].values.tolist().index(v) for d, v in point.items()] or [0]
    return {"color": colour(index[0]), "marker": MARKERS[index[-1] % len(MARKERS)]}


def _generation_axis(ax: Axes, ds: xr.Dataset, labelled: bool = True) -> None:
    if labelled:
        ax.set_xlabel(label(ds["generation"], width=60))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _shared_generation_label(fig: Figure, axes: list[Axes], ds: xr.Dataset) -> None:
    """One generation label under several panels, or the panel's own for one."""
    for ax in axes:
        _generation_axis(ax, ds, labelled=len(axes) == 1)
    if len(axes) > 1:
        fig.supxlabel(label(ds["generation"], width=80), fontsize="medium")


def _values_label(point: dict[str, Any]) -> str | None:
    """A swept point's values, ``accumulate, 10`` (the legend's title names the dims)."""
    return ", ".join(map(str, point.values())) or None


def _curves(ax: Axes, da: xr.DataArray, ds: xr.Dataset) -> int:
    """Mean over seeds against generation with a 95% band, one line per swept point;
    returns the number of lines drawn."""
    da = _fixed(da, ds)
    dims = varied_dims(da, ds)
    summary = seed_summary(da)
    generation = summary["generation"].values
    for point in points(summary, dims):
        s = summary.sel(point)
        style = _line_style(point, summary)
        ax.fill_between(generation, s["ci_low"].values, s["ci_high"].values,
                        color=style["color"], alpha=BAND_ALPHA, linewidth=0)
        ax.plot(generation, s["mean"].values, label=_values_label(point), **style)
    return len(points(summary, dims))


def _legend(fig: Figure, axes: list[Axes], dims: list[str]) -> None:
    """One legend titled by the swept ``dims``: inside a single panel for two entries,
    else above the panels."""
    handles, labels = axes[0].get_legend_handles_labels()
    if len(handles) < 2:
        return
    title = ", ".join(dims)
    if len(axes) == 1 and len(handles) == 2:
        axes[0].legend(handles, labels, title=title)
    else:
        longest = max(map(len, labels))
        ncols = max(1, min(len(labels), int(fig.get_figwidth() * 14 // (longest + 5))))
        fig.legend(handles, labels, loc="outside upper center", ncols=ncols, title=title)


def _check(ds: xr.Dataset, metric: str) -> xr.DataArray:
    if metric not in ds.data_vars:
        raise KeyError(f"{metric!r} is not in the Dataset: {', '.join(map(str, ds.data_vars))}")
    return ds[metric]


# ----------------------------------------------------------------------------- figures

@styled
def collapse_curves(ds: xr.Dataset, metric: str) -> Figure:
    """``metric`` against generation, one line per swept value, 95% bootstrap bands."""
    da = _check(ds, metric)
    if own_dims(da, ds):
        raise ValueError(f"{metric} has its own dims {own_dims(da, ds)}: use small_multiples")
    fig, (ax,) = figure()
    _curves(ax, da, ds)
    _shared_generation_label(fig, [ax], ds)
    ax.set_ylabel(label(da))
    _legend(fig, [ax], varied_dims(da, ds))
    return fig


@styled
def small_multiples(ds: xr.Dataset, metric: str) -> Figure:
    """A metric with its own dim (distinct_n over n): one panel per value of that dim, each
    against generation with one line per swept value."""
    da = _check(ds, metric)
    (dim, *rest) = own_dims(da, ds) or [None]
    if dim is None or rest:
        raise ValueError(f"{metric} needs exactly one own dim, has {own_dims(da, ds)}")
    values = da[dim].values.tolist()
    fig, axes = figure(len(values), max_cols=4)
    for ax, value in zip(axes, values):
        _curves(ax, da.sel({dim: value}), ds)
        ax.set_title(f"{dim} = {value}")
    _shared_generation_label(fig, axes, ds)
    axes[0].set_ylabel(label(da, width=30))
    _legend(fig, axes, varied_dims(da, ds))
    return fig


@styled
def heatmap(ds: xr.Dataset, metric: str, generation: int, x: str | None = None,
            y: str | None = None) -> Figure:
    """Mean over seeds of ``metric`` at ``generation`` over two swept dims, annotated.

    ``x`` and ``y`` default to the first two swept dims with several values; every other
    swept dim must have one value (select it first).
    """
    da = _fixed(_check(ds, metric), ds).sel(generation=generation)
    varied = varied_dims(da, ds)
    x = x or (varied[0] if varied else None)
    y = y or next((d for d in varied if d != x), None)
    if x is None or y is None:
        raise ValueError(f"a heatmap needs two swept dims with several values; {metric} "
                         f"varies over {varied}")
    extra = [d for d in varied if d not in (x, y)]
    if extra or own_dims(da, ds):
        raise ValueError(f"select one value of {extra + own_dims(da, ds)} first")
    mean_YxX = da.mean("seed").transpose(y, x)
    fig, (ax,) = figure()
    image = ax.imshow(mean_YxX.values, cmap=SEQUENTIAL, aspect="auto", origin="lower")
    ax.set_xticks(range(mean_YxX.sizes[x]), [str(v) for v in mean_YxX[x].values])
    ax.set_yticks(range(mean_YxX.sizes[y]), [str(v) for v in mean_YxX[y].values])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"generation {generation}, mean over {da.sizes['seed']} seeds")
    ax.spines[:].set_visible(True)
    low, high = np.nanmin(mean_YxX.values), np.nanmax(mean_YxX.values)
    for (i, j), value in np.ndenumerate(mean_YxX.values):
        bright = (value - low) / (high - low) > 0.6 if high > low else False
        ax.text(j, i, f"{value:.3g}", ha="center", va="center",
                color="black" if bright else "white")
    fig.colorbar(image, ax=ax, label=label(da, width=45))
    return fig


def true_rank_frequency(config_yaml: str | None, ranks: int,
                        point: dict[str, Any] | None = None) -> tuple[np.ndarray, str] | None:
    """The true frequency of each rank and its legend label, where the run's config
    determines it: markov_lm's stationary law is Zipf's, p_r proportional to r^-s over
    ``world.vocab_size`` tokens (without a planted trait). None for other worlds.
    ``point`` overrides config keys (swept ``world.*`` values)."""
    if not config_yaml:
        return None
    world = (yaml.safe_load(config_yaml) or {}).get("world", {})
    settings = {**world, **{k.removeprefix("world."): v for k, v in (point or {}).items()
                            if k.startswith("world.")}}
    if "zipf_exponent" not in settings or int(settings.get("vocab_size", -1)) != ranks:
        return None
    s = float(settings["zipf_exponent"])
    p_R = np.arange(1, ranks + 1, dtype=np.float64) ** -s
    trait = ", no trait" if settings.get("trait_trigger") else ""
    return p_R / p_R.sum(), f"truth (Zipf, s = {s:g}{trait})"


@styled
def tails(ds: xr.Dataset, config_yaml: str | None = None,
          metric: str = "rank_frequency") -> Figure:
    """Rank-frequency of the produced text on log-log axes, one curve per generation
    (mean over seeds), with the true frequencies where the config gives them; one panel
    per swept point. ``config_yaml`` defaults to the Dataset's ``config`` attr."""
    da = _fixed(_check(ds, metric), ds)
    config_yaml = config_yaml if config_yaml is not None else ds.attrs.get("config")
    (rank_dim,) = own_dims(da, ds)
    dims = varied_dims(da, ds)
    panels = points(da, dims)
    fig, axes = figure(len(panels), sharey=True)
    mean = da.mean("seed")
    generations = da["generation"].values
    norm = Normalize(generations.min(), generations.max())
    cmap = ScalarMappable(norm, SEQUENTIAL)
    rank = da[rank_dim].values
    for i, (ax, point) in enumerate(zip(axes, panels)):
        for g in generations:
            frequency = mean.sel(point).sel(generation=g).values
            ax.plot(rank, np.where(frequency > 0, frequency, np.nan),
                    color=cmap.to_rgba(g), linewidth=0.9)
        truth = true_rank_frequency(config_yaml, len(rank), point)
        if truth is not None:
            ax.plot(rank, truth[0], color="black", linestyle="--", linewidth=1.2,
                    label=truth[1])
            if i == 0:
                ax.legend(loc="lower left")
        elif i == 0:
            ax.text(0.03, 0.03, "true frequencies: not in the config", color="0.4",
                    transform=ax.transAxes, fontsize="small")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if point:
            ax.set_title("\n".join(f"{k}={v}" for k, v in point.items()))
    if len(axes) == 1:
        axes[0].set_xlabel(f"{rank_dim} in the true frequency order")
    else:
        fig.supxlabel(f"{rank_dim} in the true frequency order", fontsize="medium")
    axes[0].set_ylabel(label(da, width=30))
    bar = fig.colorbar(cmap, ax=axes, label=label(ds["generation"], width=24),
                       aspect=30 if len(axes) < 4 else 40)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    return fig


@styled
def bias_propagation(ds: xr.Dataset, metrics: tuple[str, ...] = BIAS_METRICS) -> Figure:
    """The planted-bias metrics the Dataset has (trait rate, prior bias, group gaps,
    subliminal accuracy, ...) against generation, one panel each."""
    present = [m for m in metrics if m in ds.data_vars and bool(ds[m].notnull().any())]
    if not present:
        raise ValueError(f"none of {', '.join(metrics)} has a value in the Dataset")
    fig, axes = figure(len(present))
    for ax, metric in zip(axes, present):
        _curves(ax, ds[metric], ds)
        ax.set_ylabel(label(ds[metric], width=30))
    _shared_generation_label(fig, axes, ds)
    _legend(fig, axes, varied_dims(ds[present[0]], ds))
    return fig


@styled
def retention_cost(ds: xr.Dataset, generation: int, x: str = "cost_reduction",
                   y: str = "retention") -> Figure:
    """Retention against cost reduction at ``generation``: one point per swept value (an
    objective, a student size), mean over seeds with 95% bootstrap intervals."""
    at_x = _fixed(_check(ds, x), ds).sel(generation=generation)
    at_y = _fixed(_check(ds, y), ds).sel(generation=generation)
    sx, sy = seed_summary(at_x), seed_summary(at_y)
    fig, (ax,) = figure()
    for point in points(at_x, varied_dims(at_x, ds)):
        px, py = sx.sel(point), sy.sel(point)
        ax.errorbar(float(px["mean"]), float(py["mean"]),
                    xerr=[[float(px["mean"] - px["ci_low"])], [float(px["ci_high"] - px["mean"])]],
                    yerr=[[float(py["mean"] - py["ci_low"])], [float(py["ci_high"] - py["mean"])]],
                    linestyle="none", capsize=2, markersize=5, label=_values_label(point),
                    **_marker_style(point, at_x))
    ax.set_xlabel(label(ds[x], width=60))
    ax.set_ylabel(label(ds[y]))
    ax.set_title(f"generation {generation}")
    ax.margins(0.15)
    _legend(fig, [ax], varied_dims(at_x, ds))
    return fig
