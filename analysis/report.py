"""One self-contained HTML page: figures embedded as PNG data URIs, tables, the metrics'
descriptions, provenance and config. No scripts, fonts or links to fetch at view time."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Any

from analysis.tables import html_table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 76rem; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.sub { color: #555; margin-top: 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(22rem, 1fr));
        gap: 1.2rem; }
figure { margin: 0; } figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; height: auto; border: 1px solid #eee; }
figure.wide img { max-width: 60rem; }
figcaption { font-size: 0.85rem; color: #444; }
figcaption code { font-size: 0.8rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right;
         vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
table.kv td, table.text td,
table.text th { text-align: left; } table.kv td:first-child { font-weight: 600; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; font-size: 0.8rem; }
.note { color: #555; font-size: 0.85rem; }
"""


@dataclass(frozen=True)
class ReportFigure:
    """A figure as the report shows it: PNG bytes, a caption, the files written."""

    name: str
    caption: str
    png: bytes
    files: tuple[str, ...] = ()
    wide: bool = False


@dataclass(frozen=True)
class ReportTable:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Report:
    title: str
    subtitle: str
    figures: list[ReportFigure] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)
    metrics: list[list[str]] = field(default_factory=list)  # name, long name, units, text
    provenance: dict[str, Any] = field(default_factory=dict)
    config: str = ""
    config_note: str = ""
    notes: list[str] = field(default_factory=list)


def _figure(f: ReportFigure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    files = ", ".join(f"<code>{html.escape(p)}</code>" for p in f.files)
    return (f'<figure class="{"wide" if f.wide else ""}">'
            f'<img alt="{html.escape(f.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(f.caption)}"
            f"{'<br>' + files if files else ''}</figcaption></figure>")


def render(report: Report) -> str:
    """The report as one HTML document."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(report.title)}</h1>", f'<p class="sub">{e(report.subtitle)}</p>',
        *(f'<p class="note">{e(n)}</p>' for n in report.notes),
    ]
    for table in report.tables:
        parts += [f"<h2>{e(table.title)}</h2>", html_table(table.header, table.rows)]
        if table.note:
            parts.append(f'<p class="note">{e(table.note)}</p>')
    if report.figures:
        parts += ["<h2>Figures</h2>", '<div class="grid">',
                  *map(_figure, report.figures), "</div>"]
    if report.metrics:
        parts += ["<h2>Metrics</h2>",
                  html_table(["name", "long name", "units", "description"], report.metrics,
                             "text")]
    parts += ["<h2>Provenance</h2>", '<table class="kv"><tbody>',
              *(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>"
                for k, v in report.provenance.items()),
              "</tbody></table>"]
    if report.config:
        parts += ["<h2>Config</h2>"]
        if report.config_note:
            parts.append(f'<p class="note">{e(report.config_note)}</p>')
        parts.append(f"<pre>{e(report.config)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
