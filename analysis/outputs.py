"""From a run or sweep directory to its figures, tables and report (``python -m analysis``).

``write_outputs`` opens the directory, chooses the figures that fit the data it finds, and
writes them into ``PATH/figures/`` with the summary tables (Markdown, LaTeX) beside them,
and ``PATH/report.html``. Anything wrong with the request raises ``UsageError`` with one
line for the user.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from analysis import figures, stats, tables
from analysis.load import (RESULTS, combine_runs, find_runs, load_run, metric_names, own_dims,
                           run_attrs, swept_dims)
from analysis.report import Report, ReportFigure, ReportTable, render
from analysis.style import FORMATS, png_bytes, save

FIGURES = "figures"
REPORT = "report.html"


class UsageError(ValueError):
    """A bad path, directory state or option; its message is one line for the user."""


@dataclass(frozen=True)
class Plot:
    """A figure to draw: file stem, caption, how to draw it, full text width or not."""

    name: str
    caption: str
    draw: Callable[[], plt.Figure]
    wide: bool = False


@dataclass(frozen=True)
class Written:
    figures: list[Path]
    tables: list[Path]
    report: Path


def open_results(path: Path, partial: bool = False) -> tuple[xr.Dataset, list[Path]]:
    """The Dataset of a run, sweep or results.nc at ``path`` and the results files it
    came from. A sweep with jobs still running is refused unless ``partial``."""
    if not path.exists():
        raise UsageError(f"{path} does not exist: give a run or sweep directory, or a "
                         f"{RESULTS}")
    if path.is_file():
        if path.name != RESULTS:
            raise UsageError(f"{path} is not a {RESULTS}, nor a run or sweep directory")
        return load_run(path), [path]
    runs = find_runs(path)
    if runs.pending and not runs.results:
        raise UsageError(f"{path} has no {RESULTS} yet: {len(runs.pending)} job"
                         f"{'s' if len(runs.pending) > 1 else ''} started, none finished "
                         "(still running, or failed)")
    if runs.pending and not partial:
        names = ", ".join(str(p.relative_to(path)) or "." for p in runs.pending[:4])
        more = ", ..." if len(runs.pending) > 4 else ""
        raise UsageError(
            f"{path} is not finished: {len(runs.pending)} of "
            f"{len(runs.pending) + len(runs.results)} jobs have no {RESULTS} yet ({names}"
            f"{more}; still running, or failed); wait, or pass --partial to use the "
            f"{len(runs.results)} finished")
    if not runs.results:
        raise UsageError(f"{path} holds no {RESULTS}: nothing under it has finished")
    try:
        return combine_runs(runs.results), runs.results  # the files just checked
    except ValueError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"the {len(runs.results)} {RESULTS} under {path} do not combine "
                         f"into one sweep ({first}); give one run or sweep directory") from None


def check_metrics(ds: xr.Dataset, names: list[str] | None) -> list[str]:
    """``names`` (all of the Dataset's metrics if None), each checked to exist."""
    available = metric_names(ds)
    if names is None:
        return available
    for name in names:
        if name not in available:
            raise UsageError(f"--metrics: unknown metric {name!r}; this Dataset has: "
                             f"{', '.join(available)}")
    return list(names)


def check_generation(ds: xr.Dataset, generation: int | None) -> int:
    last = int(ds["generation"].max())
    if generation is None:
        return last
    if generation not in ds["generation"].values:
        raise UsageError(f"--generation={generation} is not in the Dataset: it has "
                         f"generations {int(ds['generation'].min())}..{last}")
    return generation


def check_compare(ds: xr.Dataset, key: str | None) -> str | None:
    """The swept key the paired comparisons compare: ``key``, or by default the first with
    two or more values (None: nothing to compare)."""
    if key is None:
        return stats.comparison_dim(ds)
    keys = [d for d in swept_dims(ds) if ds.sizes[d] >= 2]
    if key not in keys:
        raise UsageError(f"--compare={key} is not a swept key with two or more values; this "
                         f"Dataset's: {', '.join(keys) or 'none'}")
    return key


def check_formats(formats: list[str]) -> list[str]:
    for fmt in formats:
        if fmt not in FORMATS:
            raise UsageError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    return formats


def _values(da: xr.DataArray) -> np.ndarray:
    return np.asarray(da.values, np.float64)


def is_informative(da: xr.DataArray) -> bool:
    """Whether ``da`` has a finite value that differs from another (worth a figure)."""
    x = _values(da)
    x = x[np.isfinite(x)]
    return x.size > 0 and float(x.max()) > float(x.min())


def plan(ds: xr.Dataset, metrics: list[str], generation: int, config: str | None
         ) -> list[Plot]:
    """The figures that fit the data: collapse curves of every scalar metric, small
    multiples of metrics with their own dims, tails of rank-frequency, bias propagation,
    retention against cost and heatmaps where the sweep has them."""
    seeds = ds.sizes["seed"]
    band = f"mean over {seeds} seeds, 95% bootstrap band"
    varied = figures.varied_dims(ds)
    drawn = [m for m in metrics if is_informative(ds[m])]
    scalar = [m for m in drawn if not own_dims(ds[m], ds)]
    bias = [m for m in scalar if m in figures.BIAS_METRICS]
    plots = []
    for m in scalar:
        if m not in bias:
            plots.append(Plot(f"curves_{m}", f"{m}: {ds[m].attrs.get('long_name', m)} ({band})",
                              functools.partial(figures.collapse_curves, ds, m)))
    for m in drawn:
        dims = own_dims(ds[m], ds)
        if dims == ["rank"]:
            plots.append(Plot(f"tails_{m}", f"{m}: {ds[m].attrs.get('long_name', m)}, "
                              f"mean over {seeds} seeds, one curve per generation",
                              functools.partial(figures.tails, ds, config, m),
                              wide=len(figures.points(ds, varied)) > 1))
        elif len(dims) == 1:
            plots.append(Plot(f"multiples_{m}", f"{m}: {ds[m].attrs.get('long_name', m)} "
                              f"per {dims[0]} ({band})",
                              functools.partial(figures.small_multiples, ds, m), wide=True))
    if bias:
        plots.append(Plot("bias_propagation", f"planted biases: {', '.join(bias)} ({band})",
                          functools.partial(figures.bias_propagation, ds, tuple(bias)),
                          wide=len(bias) > 1))
    if {"retention", "cost_reduction"} <= set(metrics) and varied and is_informative(
            ds["cost_reduction"]):
        plots.append(Plot("retention_cost", f"retention against cost reduction at generation "
                          f"{generation} (mean over {seeds} seeds, 95% bootstrap intervals)",
                          functools.partial(figures.retention_cost, ds, generation)))
    if len(varied) >= 2:
        fixed = {d: ds[d].values[0] for d in varied[2:]}
        sub = ds.sel({d: [v] for d, v in fixed.items()})
        at = f" at {stats.point_label(fixed)}" if fixed else ""
        for m in scalar:
            plots.append(Plot(f"heatmap_{m}", f"{m} at generation {generation} over "
                              f"{varied[0]} and {varied[1]}{at} (mean over {seeds} seeds)",
                              functools.partial(figures.heatmap, sub, m, generation,
                                                varied[0], varied[1])))
    return plots


def _provenance(ds: xr.Dataset, root: Path, files: list[Path]) -> dict[str, object]:
    """What the report shows of where the data came from."""
    info: dict[str, object] = {"path": str(root), "runs": len(files),
                               "dims": ", ".join(f"{d} ({n})" for d, n in ds.sizes.items())}
    for d in swept_dims(ds):
        info[f"swept: {d}"] = ", ".join(map(str, ds[d].values.tolist()))
    info.update({k: v for k, v in ds.attrs.items() if k != "config"})
    if len(files) > 1:
        walls = [run_attrs(f).get("wall_time_s", np.nan) for f in files]
        info["wall_time_s (all runs)"] = f"{np.nansum(walls):.1f}"
    return info


def write_figures(plots: list[Plot], out: Path, root: Path, formats: list[str]
                  ) -> tuple[list[Path], list[ReportFigure]]:
    """Each plot drawn and saved in ``formats`` under ``out``; the files and the report's
    figures (PNG bytes, paths relative to ``root``)."""
    written, shown = [], []
    for p in plots:
        fig = p.draw()
        paths = [save(fig, out / p.name, fmt) for fmt in formats]
        png = paths[formats.index("png")].read_bytes() if "png" in formats else png_bytes(fig)
        plt.close(fig)
        written += paths
        shown.append(ReportFigure(p.name, p.caption, png,
                                  tuple(str(q.relative_to(root)) for q in paths), p.wide))
    return written, shown


def _write_table(out: Path, stem: str, caption: str, header: list[str],
                 rows: list[list[str]]) -> list[Path]:
    markdown, latex = out / f"{stem}.md", out / f"{stem}.tex"
    out.mkdir(parents=True, exist_ok=True)
    markdown.write_text(f"{caption}.\n\n" + tables.markdown(header, rows))
    latex.write_text(tables.latex(header, rows, caption))
    return [markdown, latex]


def write_tables(ds: xr.Dataset, metrics: list[str], generation: int, out: Path,
                 dim: str | None = None
                 ) -> tuple[list[Path], list[ReportTable]]:
    """The summary table, the rates (change per generation) and, in a sweep, the paired
    comparisons of ``dim``'s values (default: ``stats.comparison_dim``), as Markdown and
    LaTeX under ``out``; the files and the report's tables."""
    seeds = ds.sizes["seed"]
    summary = tables.summary_table(ds, metrics, generation)
    header, rows = tables.text_table(summary, ds)
    files = _write_table(out, "summary", f"Generation {generation}: mean ± standard error "
                         f"over {seeds} seeds", header, rows)
    shown = [ReportTable(f"Summary at generation {generation}", header, rows,
                         f"mean ± standard error over {seeds} seeds; the 95% bootstrap "
                         "intervals are in the figures")]
    rated = ds.sizes["generation"] >= 3  # a slope through two points is their difference
    if rated:
        rates = tables.rate_table(ds, metrics)
        header, rows = tables.text_table(rates, ds, per="per generation")
        if rows:
            note = (f"least-squares slope against generation in each seed (from generation 1 "
                    f"for metrics without a value at 0), mean ± standard error over {seeds} "
                    "seeds; metrics the same in every seed are left out")
            files += _write_table(out, "rates", "Change per generation: " + note, header,
                                  rows)
            shown.append(ReportTable("Change per generation", header, rows, note))
    dim = dim or stats.comparison_dim(ds)
    if dim is None or seeds < 2:
        return files, shown
    in_summary = set(summary["metric"]) if not summary.empty else set()
    compared = [m for m in metrics if m in in_summary and is_informative(ds[m])]
    kinds = [(generation, "comparisons", f"at generation {generation}", "")]
    if rated:
        kinds.append((None, "rate_comparisons", "of each seed's change per generation (the "
                      "slopes of rates.md)", ": change per generation"))
    for at, stem, what, title in kinds:
        comparison = stats.comparison_table(ds, compared, dim, at)
        if comparison.empty:
            continue
        header, rows = tables.comparison_text(comparison)
        note = (f"Wilcoxon signed-rank test of {dim} = a against b over seeds (paired: lanes "
                f"share seeds) {what}; p-values Holm-corrected across the "
                f"{len(comparison)} comparisons")
        if 2.0 ** (1 - seeds) > 1e-3:  # few seeds: say how small p can get
            note += (f"; with {seeds} pairs the smallest two-sided p is 2^(1-{seeds}) = "
                     f"{2.0 ** (1 - seeds):.3g}")
        files += _write_table(out, stem, note, header, rows)
        shown.append(ReportTable(f"Paired comparisons of {dim}{title}", header, rows, note))
    return files, shown


def write_outputs(path: str | Path, metrics: list[str] | None = None,
                  generation: int | None = None, formats: tuple[str, ...] = ("pdf", "png"),
                  partial: bool = False, compare: str | None = None) -> Written:
    """Figures and tables into ``PATH/figures/``, the report into ``PATH/report.html``."""
    path = Path(path)
    formats = check_formats(list(formats))
    ds, files = open_results(path, partial)
    metrics = check_metrics(ds, metrics)
    generation = check_generation(ds, generation)
    compare = check_compare(ds, compare)
    root = path.parent if path.is_file() else path
    out = root / FIGURES
    config = ds.attrs.get("config") or run_attrs(files[0]).get("config", "")

    figure_files, shown = write_figures(plan(ds, metrics, generation, config), out, root,
                                        formats)
    table_files, report_tables = write_tables(ds, metrics, generation, out, compare)

    varied = figures.varied_dims(ds)
    skipped = [m for m in metrics if not is_informative(ds[m])]
    report = Report(
        title=f"Sweep over {', '.join(varied)}" if varied else "Run",
        subtitle=f"{root}: generations 0..{int(ds['generation'].max())}, "
                 f"{ds.sizes['seed']} seeds, {len(files)} run{'s' if len(files) > 1 else ''}",
        figures=shown, tables=report_tables,
        metrics=[[m, ds[m].attrs.get("long_name", ""), ds[m].attrs.get("units", ""),
                  ds[m].attrs.get("description", "")] for m in metrics],
        provenance=_provenance(ds, root, files), config=config,
        config_note="" if ds.attrs.get("config") else (
            f"config of job {files[0].parent.relative_to(root)}; the swept keys differ "
            "between runs"),
        notes=[f"Not drawn (constant or without values): {', '.join(skipped)}."]
        if skipped else [])
    report_path = root / REPORT
    report_path.write_text(render(report))
    return Written(figure_files, table_files, report_path)
