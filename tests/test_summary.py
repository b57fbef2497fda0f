"""The run summary table."""

import numpy as np

from sim.record import to_dataset
from sim.summary import format_summary, summary_rows
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
