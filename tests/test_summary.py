"""The run summary table."""

import numpy as np

from sim.record import to_dataset
from sim.summary import format_points, format_summary, summary_rows
from sim.worlds.base import MetricInfo


def test_summary_counts_lanes_not_metric_dims_and_picks_rows():
    info = {"a": MetricInfo("a"), "per_n": MetricInfo("per n", dims=("n",))}
    metrics = {"a": np.array([[1.0, 3.0], [2.0, 2.0]]), "per_n": np.zeros((2, 2, 4))}
    text = format_summary(to_dataset(metrics, info), ["a"])
    assert "(mean ± std over 2 lanes)" in text
    assert "2 ± 1" in text.splitlines()[1]  # generation 0: mean 2, std (ddof 0) 1
    assert summary_rows(3) == [0, 1, 2]
    rows = summary_rows(101, most=12)
    assert rows[0] == 0 and rows[-1] == 100 and len(rows) <= 12


def test_columns_stay_apart_whatever_the_magnitudes():
    info = {"a": MetricInfo("a"), "b": MetricInfo("b")}
    metrics = {"a": np.array([[3.058e8, 3.1e8]]), "b": np.array([[1.0, 1.0]])}
    header, row, _ = format_summary(to_dataset(metrics, info), ["a", "b"]).splitlines()
    assert row.endswith("  3.079e+08 ± 2.1e+06  1 ± 0")  # two spaces at least between cells
    assert len(header) == len(row)


def test_points_table_has_one_row_per_grid_point():
    info = {"a": MetricInfo("a")}
    ds = to_dataset({"a": np.arange(6.0)[None]}, info, grid=(("x", (0.5, 1.0)), ("y", (0.0, 0.1, 0.2))),
                    seeds=1)
    lines = format_points(ds, ["a"], ["x", "y"]).splitlines()
    assert len(lines) == 1 + 6 + 1
    assert lines[1].split() == ["x=0.5", "y=0", "0", "±", "0"]
    assert lines[-2].split() == ["x=1", "y=0.2", "5", "±", "0"]  # point-major lanes
