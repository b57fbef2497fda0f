"""Summary tables of a run or sweep at one generation, as numbers (pandas) and as text
(Markdown, LaTeX with booktabs, HTML)."""

from __future__ import annotations

import html
import math

import pandas as pd
import xarray as xr

from analysis.figures import points, varied_dims
from analysis.load import own_dims
from analysis.stats import seed_summary, slopes, varies_over_seeds

STATS = ("mean", "sem", "ci_low", "ci_high", "count")


def summary_table(ds: xr.Dataset, metrics: list[str], generation: int) -> pd.DataFrame:
    """One row per (swept point, metric) at ``generation``: the varied swept dims' values,
    ``metric``, and the seed statistics ``mean``, ``sem``, ``ci_low``, ``ci_high``,
    ``count``. Metrics with their own dims (distinct_n over n) are left out."""
    return _seed_table(ds, {m: ds[m].sel(generation=generation) for m in metrics
                            if not own_dims(ds[m], ds)})


def rate_table(ds: xr.Dataset, metrics: list[str]) -> pd.DataFrame:
    """As ``summary_table``, of each metric's change per generation: its least-squares
    slope against generation in every seed (``stats.slopes``). Metrics that are the same in
    every seed of several (costs the config fixes) are left out, as are those with their
    own dims."""
    several = ds.sizes["seed"] >= 2
    return _seed_table(ds, {m: slopes(ds[m]) for m in metrics if not own_dims(ds[m], ds)
                            and (varies_over_seeds(ds[m]) or not several)})


def _seed_table(ds: xr.Dataset, values: dict[str, xr.DataArray]) -> pd.DataFrame:
    """One row per (swept point, metric) of the seed statistics of ``values``."""
    rows = []
    for metric, at in values.items():
        dims = varied_dims(at, ds)
        summary = seed_summary(at.squeeze([d for d in at.dims if d != "seed"
                                           and d not in dims and at.sizes[d] == 1]))
        for point in points(summary, dims):
            s = summary.sel(point)
            rows.append({**point, "metric": metric, **{k: float(s[k]) for k in STATS}})
    return pd.DataFrame(rows)


def mean_pm_sem(mean: float, sem: float) -> str:
    """``mean ± sem``, the SE to two significant digits and the mean to the same place."""
    if not math.isfinite(mean):
        return "NaN"
    if not math.isfinite(sem) or sem == 0:
        return f"{mean:.4g}"
    places = max(0, 1 - int(math.floor(math.log10(abs(sem)))))
    rounded = f"{mean:.{places}f}"
    if float(rounded) == 0:
        rounded = rounded.lstrip("-")
    return f"{rounded} ± {sem:.{places}f}"


def _heading(ds: xr.Dataset, metric: str, per: str = "") -> str:
    units = " ".join(filter(None, [ds[metric].attrs.get("units"), per]))
    return f"{metric} ({units})" if units else metric


def text_table(table: pd.DataFrame, ds: xr.Dataset, per: str = ""
               ) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of strings, cells ``mean ± SE``. One run: a row per metric with its
    interval and seeds. A sweep: a row per swept point and a column per metric, or the
    transpose when there are more metrics than points (the longer list goes down).
    ``per``: what the values are per, after the units (``per generation`` for rates)."""
    if table.empty:
        return [], []
    dims = [c for c in table.columns if c not in ("metric", *STATS)]
    metrics = list(dict.fromkeys(table["metric"]))
    if not dims:
        header = ["metric", "mean ± SE", "95% CI", "seeds"]
        rows = [[_heading(ds, r.metric, per), mean_pm_sem(r.mean, r.sem),
                 f"[{r.ci_low:.4g}, {r.ci_high:.4g}]", str(int(r.count))]
                for r in table.itertuples()]
        return header, rows
    cells: dict[tuple[str, ...], dict[str, str]] = {}
    for r in table.to_dict("records"):
        key = tuple(str(r[d]) for d in dims)
        cells.setdefault(key, {})[r["metric"]] = mean_pm_sem(r["mean"], r["sem"])
    if len(metrics) <= len(cells):
        header = [*dims, *(_heading(ds, m, per) for m in metrics)]
        rows = [[*key, *(row.get(m, "") for m in metrics)] for key, row in cells.items()]
        return header, rows
    header = ["metric", *(", ".join(f"{d}={v}" for d, v in zip(dims, key)) for key in cells)]
    rows = [[_heading(ds, m, per), *(row.get(m, "") for row in cells.values())] for m in metrics]
    return header, rows


def comparison_text(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of strings of a paired-comparison table (``stats.comparison_table``)."""
    at = bool(table["at"].astype(bool).any())
    header = ["metric", "a", "b", *(["at"] if at else []), "pairs", "mean a − b", "W", "p",
              "p (Holm)"]
    rows = [[r.metric, str(r.a), str(r.b), *([r.at] if at else []), str(r.n),
             f"{r.mean_diff:.4g}", f"{r.W:g}", f"{r.p:.3g}", f"{r.p_holm:.3g}"]
            for r in table.itertuples()]
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    align = ["---" if i == 0 else "---:" for i in range(len(header))]
    return "\n".join([line(header), "|" + "|".join(align) + "|", *map(line, rows)]) + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "±": r"$\pm$", "−": "$-$"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(c, c) for c in text)


def latex(header: list[str], rows: list[list[str]], caption: str = "") -> str:
    """A booktabs tabular (``\\usepackage{booktabs}``), in a table float with ``caption``."""
    spec = "l" + "r" * (len(header) - 1)
    body = [" & ".join(map(latex_escape, r)) + r" \\" for r in rows]
    lines = [r"\begin{table}", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
              " & ".join(map(latex_escape, header)) + r" \\", r"\midrule", *body,
              r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def html_table(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """An HTML table (text escaped), of ``css_class`` if given."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    attribute = f' class="{html.escape(css_class)}"' if css_class else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
