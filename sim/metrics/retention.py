"""Per-generation quantities relative to generation 0, computed from a run's metric arrays
(generation x lane) after the chain has run:

- ``retention``: the headline quality relative to generation 0, the "performance retention"
  that distillation papers report. ``ratio``: quality_g / quality_0 (accuracy);
  ``likelihood``: exp(-(nll_g - nll_0)), the per-token likelihood ratio of held-out data.
- ``cost_reduction``: 1 - train_flops_g / train_flops_0 (negative when a generation cost
  more to train than the generation-0 teacher).
- any metric a world declares as ``Relative`` (e.g. ``trait_amplification``, the ratio
  trait_rate_g / trait_rate_0 of the LM worlds).

A ratio to a generation-0 value of 0 (or NaN) is NaN.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from sim.worlds.base import MetricInfo, Relative

RETENTION_INFO = {
    "retention": MetricInfo(
        "quality retained from generation 0", "",
        "accuracy_g / accuracy_0, or exp(nll_0 - nll_g) (held-out likelihood ratio) for "
        "language models; 1 at generation 0"),
    "cost_reduction": MetricInfo(
        "training cost saved against generation 0", "",
        "1 - train_flops_g / train_flops_0 (0 at generation 0)"),
}
KINDS = ("ratio", "likelihood", "saving")


def relative_to_start(values_GxS: np.ndarray, kind: str) -> np.ndarray:
    """Values (generation first) relative to generation 0 (``kind`` in ``KINDS``), float32;
    trailing metric dims broadcast."""
    v = np.asarray(values_GxS, np.float64)
    if kind == "likelihood":
        return np.exp(v[:1] - v).astype(np.float32)
    if kind not in KINDS:
        raise ValueError(f"relative kind {kind!r}: one of {', '.join(KINDS)}")
    start = np.where(v[:1] != 0, v[:1], np.nan)
    ratio = v / start
    return (ratio if kind == "ratio" else 1.0 - ratio).astype(np.float32)


def relative_metrics(metrics: Mapping[str, np.ndarray],
                     relative: Mapping[str, Relative]) -> dict[str, np.ndarray]:
    """The ``relative`` metrics (name -> Relative) of a run's metric arrays."""
    return {name: relative_to_start(metrics[r.of], r.kind) for name, r in relative.items()}


def retention_metrics(metrics: Mapping[str, np.ndarray], quality: str,
                      kind: str) -> dict[str, np.ndarray]:
    """``retention`` of metric ``quality`` (``kind``: ratio | likelihood), and
    ``cost_reduction`` where ``train_flops`` is recorded; arrays (G + 1, lanes)."""
    if kind not in ("ratio", "likelihood"):
        raise ValueError(f"retention kind {kind!r}: ratio or likelihood")
    out = {"retention": relative_to_start(metrics[quality], kind)}
    if "train_flops" in metrics:
        out["cost_reduction"] = relative_to_start(metrics["train_flops"], "saving")
    return out
