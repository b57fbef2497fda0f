"""python -m analysis PATH [--metrics a,b] [--generation G] [--format pdf,png] [--partial]
[--compare KEY]

Writes PATH/figures/ (figures, summary tables) and PATH/report.html, then prints where.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from analysis.outputs import UsageError, write_outputs


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr and exit status 2 (argparse prints the usage too)."""
        self.exit(2, f"error: {message} (python -m analysis --help)\n")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m analysis", description=(
        "Figures, summary tables (Markdown, LaTeX) and a self-contained HTML report of a "
        "run or sweep directory written by python -m sim."))
    p.add_argument("path", help="a run directory, a multirun (sweep) directory, or a "
                                "results.nc")
    p.add_argument("--metrics", type=_names, default=None,
                   help="comma-separated metric names (default: every metric)")
    p.add_argument("--generation", type=int, default=None,
                   help="generation of the tables, heatmaps and retention plot (default: "
                        "the last)")
    p.add_argument("--format", type=_names, default=["pdf", "png"],
                   help="comma-separated figure formats: pdf, png, svg (default: pdf,png)")
    p.add_argument("--partial", action="store_true",
                   help="use the finished jobs of a sweep that is still running")
    p.add_argument("--compare", default=None, metavar="KEY",
                   help="the swept key whose values the paired comparisons compare "
                        "(default: the first with two or more values)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        written = write_outputs(args.path, args.metrics, args.generation,
                                tuple(args.format), args.partial, args.compare)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    folder = written.report.parent / "figures"
    print(f"figures: {folder}/ ({len(written.figures)} files)")
    print(f"tables:  {', '.join(str(p) for p in written.tables)}")
    print(f"report:  {written.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
