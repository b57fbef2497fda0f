"""Lanes whose training blew up: marked, and their metrics from then on set to NaN.

A trained world reports each generation's ``train_loss`` (the mean minibatch loss over the
last tenth of its steps). A lane diverges at the first generation whose loss is NaN, inf or
above ``train.diverged_loss``; the ``diverged`` variable is 1 from there on, and every other
metric of that lane is NaN from there on (``train_loss`` itself is kept, to show what
happened). Other lanes are untouched: each chain is its own program.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from sim.worlds.base import MetricInfo

DIVERGED_INFO = MetricInfo(
    "diverged", "", "1 from the first generation whose final training loss was NaN, inf or "
    "above train.diverged_loss (the lane's other metrics are NaN from then on), else 0")


def mark_diverged(metrics: Mapping[str, np.ndarray], bound: float) -> dict[str, np.ndarray]:
    """Metrics (G + 1, lanes, ...) with the diverged lanes masked and ``diverged`` added."""
    loss_GxL = np.asarray(metrics["train_loss"])
    with np.errstate(invalid="ignore"):
        blown_GxL = ~np.isfinite(loss_GxL) | (loss_GxL > bound)
    diverged_GxL = np.logical_or.accumulate(blown_GxL, axis=0)
    masked = {}
    for name, values in metrics.items():
        values = np.asarray(values)
        if name == "train_loss":
            masked[name] = values
            continue
        mask = diverged_GxL.reshape(diverged_GxL.shape + (1,) * (values.ndim - 2))
        masked[name] = np.where(mask, np.nan, values)
    masked["diverged"] = diverged_GxL.astype(np.float32)
    return masked
