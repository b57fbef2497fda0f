"""Shared helper for statistical tests: compare a sample mean with its expectation."""

from __future__ import annotations

import numpy as np

Z = 4.0  # two-sided p ~ 6e-5 per comparison


def assert_mean(samples: np.ndarray, expected: float, sd: float | None = None,
                z: float = Z) -> None:
    """Assert |mean - expected| < z standard errors (sd = the samples' own std if None)."""
    samples = np.asarray(samples, np.float64)
    sd = samples.std(ddof=1) if sd is None else sd
    se = sd / np.sqrt(samples.size)
    mean = samples.mean()
    assert abs(mean - expected) < z * se, (
        f"mean {mean:.6g} vs expected {expected:.6g}: {abs(mean - expected) / se:.1f} SE")
