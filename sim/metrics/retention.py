"""Per-generation quantities relative to generation 0: quality retention and cost savings.

Computed from a run's metric arrays (generation x lane) after the chain has run:

- ``retention``: the headline quality relative to generation 0, the "performance retention"
  that distillation papers report. ``ratio``: quality_g / quality_0 (accuracy);
  ``likelihood``: exp(-(nll_g - nll_0)), the per-token likelihood ratio of held-out data.
- ``cost_reduction``: 1 - train_flops_g / train_flops_0 (negative when a generation cost
  more to train than the generation-0 teacher).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from sim.worlds.base import MetricInfo

RETENTION_INFO = {
    "retention": MetricInfo(
        "quality retained from generation 0", "",
        "accuracy_g / accuracy_0, or exp(nll_0 - nll_g) (held-out likelihood ratio) for "
        "language models; 1 at generation 0"),
    "cost_reduction": MetricInfo(
        "training cost saved against generation 0", "",
        "1 - train_flops_g / train_flops_0 (0 at generation 0)"),
}


def retention_metrics(metrics: Mapping[str, np.ndarray], quality: str,
                      kind: str) -> dict[str, np.ndarray]:
    """``retention`` of metric ``quality`` (``kind``: ratio | likelihood), and
    ``cost_reduction`` where ``train_flops`` is recorded; arrays (G + 1, lanes)."""
    q = np.asarray(metrics[quality], np.float64)
    if kind == "ratio":
        retention = q / q[:1]
    elif kind == "likelihood":
        retention = np.exp(q[:1] - q)
    else:
        raise ValueError(f"retention kind {kind!r}: ratio or likelihood")
    out = {"retention": retention.astype(np.float32)}
    if "train_flops" in metrics:
        flops = np.asarray(metrics["train_flops"], np.float64)
        out["cost_reduction"] = (1.0 - flops / flops[:1]).astype(np.float32)
    return out
