"""One style for every figure: single-column size, embedded fonts, a colour-blind-safe
palette, axis labels from the variables' attrs, and byte-identical files for the same data.
"""

from __future__ import annotations

import functools
import io
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

P = ParamSpec("P")
R = TypeVar("R")

COLUMN_WIDTH_IN = 3.4  # one column of a two-column paper (about 86 mm)
TEXT_WIDTH_IN = 7.0  # both columns, for figures of several panels
HEIGHT_IN = 2.5
# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442")
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "<", ">", "p")
SEQUENTIAL = "viridis"  # for ordered series (generations): perceptually uniform, CVD-safe
FORMATS = ("pdf", "png", "svg")
DPI = 200

RC = {
    "figure.figsize": (COLUMN_WIDTH_IN, HEIGHT_IN),
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "font.family": "DejaVu Sans",
    "font.size": 7.5,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7.5,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "pdf.fonttype": 42,  # embed TrueType fonts (editable text, accepted by publishers)
    "ps.fonttype": 42,
    "svg.fonttype": "path",
    "svg.hashsalt": "analysis",  # fixed ids in SVG output
    "image.cmap": SEQUENTIAL,
}

# no dates or version strings that would change the bytes of identical figures
METADATA = {"pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None},
            "png": {"Software": None},
            "svg": {"Date": None, "Creator": None}}


@contextmanager
def style() -> Iterator[None]:
    """Draw inside this context to get the house style."""
    with plt.rc_context(RC):
        yield


def styled(draw: Callable[P, R]) -> Callable[P, R]:
    """``draw`` run inside ``style()`` (artists read the rc settings when they are made)."""
    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with style():
            return draw(*args, **kwargs)
    return wrapper


def colour(i: int) -> str:
    """The i-th palette colour (cycling)."""
    return PALETTE[i % len(PALETTE)]


def label(da: xr.DataArray | xr.Variable, width: int = 38) -> str:
    """An axis label from ``long_name`` (or the name) and ``units``, wrapped to ``width``."""
    name = da.attrs.get("long_name") or getattr(da, "name", None) or ""
    units = da.attrs.get("units")
    text = f"{name} ({units})" if units else str(name)
    return "\n".join(textwrap.wrap(text, width)) or str(name)


def figure(panels: int = 1, max_cols: int = 3, panel_height_in: float = HEIGHT_IN,
           **kwargs) -> tuple[Figure, list[Axes]]:
    """A figure of ``panels`` axes: one column wide for one panel, else the text width with
    up to ``max_cols`` panels a row (unused cells removed). Call inside ``style()``."""
    nrows = -(-panels // max_cols)
    ncols = -(-panels // nrows)  # balanced rows: 4 panels as 2 x 2, not 3 + 1
    width = COLUMN_WIDTH_IN if panels == 1 else min(TEXT_WIDTH_IN, 2.4 * ncols)
    height = panel_height_in if panels == 1 else 0.8 * panel_height_in
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows + 0.3 * (nrows > 1)),
                             layout="constrained", squeeze=False, **kwargs)
    axes = list(axes.ravel())
    for ax in axes[panels:]:
        fig.delaxes(ax)
    return fig, axes[:panels]


def save(fig: Figure, path: str | Path, fmt: str) -> Path:
    """Write ``fig`` as ``path`` with suffix ``fmt``, without time stamps."""
    path = Path(path).with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with style():
        fig.savefig(path, format=fmt, metadata=METADATA[fmt])
    return path


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """``fig`` as PNG bytes (for embedding in a report)."""
    buffer = io.BytesIO()
    with style():
        fig.savefig(buffer, format="png", dpi=dpi, metadata=METADATA["png"])
    return buffer.getvalue()
