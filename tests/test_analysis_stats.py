"""analysis.stats against scipy, numpy and hand cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from test_analysis_data import synthetic

from analysis import stats


def test_seed_summary_matches_numpy_and_scipy_per_cell():
    ds = synthetic()
    summary = stats.seed_summary(ds["loss"])
    assert set(summary["mean"].dims) == {"generation", "mix", "distill", "sampling.temperature"}
    x = ds["loss"].transpose(..., "seed").values
    np.testing.assert_allclose(summary["mean"].transpose(*ds["loss"].dims[:1],
                                                         *ds["loss"].dims[2:]).values,
                               x.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(summary["sem"].transpose(*ds["loss"].dims[:1],
                                                        *ds["loss"].dims[2:]).values,
                               scipy.stats.sem(x, axis=-1), rtol=1e-12)
    assert (summary["ci_low"] <= summary["mean"]).all()
    assert (summary["mean"] <= summary["ci_high"]).all()
    assert (summary["count"] == ds.sizes["seed"]).all()


def test_seed_summary_leaves_out_nans():
    da = xr.DataArray([[1.0, 2.0, np.nan, 3.0], [np.nan, np.nan, np.nan, 5.0]],
                      dims=("generation", "seed"))
    s = stats.seed_summary(da)
    np.testing.assert_allclose(s["mean"].values, [2.0, 5.0])
    np.testing.assert_allclose(s["sem"].values[0], 1.0 / np.sqrt(3))
    assert np.isnan(s["sem"].values[1]) and np.isnan(s["ci_low"].values[1])
    assert list(s["count"].values) == [3, 1]
    assert 1.0 <= s["ci_low"].values[0] < 2.0 < s["ci_high"].values[0] <= 3.0


def test_bootstrap_ci_agrees_with_scipy_percentile_interval():
    x = np.random.default_rng(3).exponential(size=(4, 30))
    low, high = stats.bootstrap_ci(x, n_resamples=4000)
    for i in range(len(x)):
        ref = scipy.stats.bootstrap((x[i],), np.mean, method="percentile",
                                    n_resamples=4000, rng=i).confidence_interval
        # the interval ends are quantiles of 4000 resampled means: Monte Carlo error is a
        # few percent of the interval's width
        width = ref.high - ref.low
        assert abs(low[i] - ref.low) < 0.1 * width
        assert abs(high[i] - ref.high) < 0.1 * width


def test_bootstrap_ci_covers_the_mean_at_its_nominal_rate():
    """Coverage of the true mean over R independent samples of n normals: the estimate is
    binomial(R, c) / R, so it lies within 4 standard errors of the nominal 0.95 unless the
    interval is wrong. (The percentile interval's own small-sample shortfall at n = 80 is
    about 0.004, well inside the tolerance of 0.028.)"""
    r, n, level = 1000, 80, 0.95
    x = np.random.default_rng(7).normal(2.0, 3.0, size=(r, n))
    low, high = stats.bootstrap_ci(x, level=level, n_resamples=1000, rng=1)
    coverage = np.mean((low < 2.0) & (2.0 < high))
    tolerance = 4 * np.sqrt(level * (1 - level) / r)
    assert abs(coverage - level) < tolerance, (coverage, tolerance)


def test_bootstrap_ci_is_reproducible_and_nan_below_two_values():
    x = np.random.default_rng(0).normal(size=(3, 5))
    np.testing.assert_array_equal(stats.bootstrap_ci(x)[0], stats.bootstrap_ci(x)[0])
    low, high = stats.bootstrap_ci(np.array([[1.0, np.nan], [np.nan, np.nan]]))
    assert np.isnan(low).all() and np.isnan(high).all()


def test_holm_hand_case():
    # m = 4 finite: sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005, 3 x 0.01, 2 x 0.03, then the
    # running maximum keeps 0.06 over 1 x 0.04
    adjusted = stats.holm(np.array([0.01, 0.04, 0.03, np.nan, 0.005]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, np.nan, 0.02])
    np.testing.assert_allclose(stats.holm(np.array([0.5, 0.9])), [1.0, 1.0])


def test_wilcoxon_matches_scipy_and_handles_ties_and_nans():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=12), rng.normal(size=12) + 0.5
    w, p = stats.wilcoxon(x, y)
    ref = scipy.stats.wilcoxon(x, y)
    assert (w, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert stats.wilcoxon(x, x) == (0.0, 1.0)
    x[0] = np.nan
    assert stats.wilcoxon(x, y)[1] == pytest.approx(scipy.stats.wilcoxon(x[1:], y[1:]).pvalue)


def test_paired_comparisons_pairs_by_seed_and_corrects_across_the_table():
    ds = synthetic(seeds=10)
    table = stats.paired_comparisons(ds["loss"], "sampling.temperature", generation=3)
    # 3 pairs of temperatures at each of the 2 mix values (distill has one value)
    assert len(table) == 6
    assert set(table["at"]) == {"mix=accumulate", "mix=replace"}
    row = table.iloc[0]
    a = ds["loss"].sel(generation=3, mix="accumulate", distill="hard")
    xa = a.sel({"sampling.temperature": row["a"]}).values
    xb = a.sel({"sampling.temperature": row["b"]}).values
    assert row["p"] == pytest.approx(scipy.stats.wilcoxon(xa, xb).pvalue)
    assert row["mean_diff"] == pytest.approx(np.mean(xa - xb))
    np.testing.assert_allclose(table["p_holm"], stats.holm(table["p"].to_numpy()))


def test_comparison_table_covers_scalar_metrics_that_vary_over_seeds_only():
    ds = synthetic(seeds=8)
    # a cost the config fixes: it differs between the mixes, never between seeds
    ds["flops"] = ds["loss"].mean("seed") * 0 + xr.DataArray([1.0, 2.0], dims="mix")
    ds["flops"] = ds["flops"].expand_dims(seed=ds.seed).transpose(*ds["loss"].dims)
    assert not stats.varies_over_seeds(ds["flops"]) and stats.varies_over_seeds(ds["loss"])
    table = stats.comparison_table(ds, ["loss", "distinct_n", "trait_rate", "flops"], "mix", 2)
    assert set(table["metric"]) == {"loss", "trait_rate"}
    assert len(table) == 2 * 3  # two metrics at 3 temperatures
    np.testing.assert_allclose(table["p_holm"], stats.holm(table["p"].to_numpy()))


def test_slopes_are_each_seeds_least_squares_fit_against_generation():
    ds = synthetic(seeds=5)
    slopes = stats.slopes(ds["loss"])
    assert "generation" not in slopes.dims and slopes.sizes["seed"] == 5
    point = {"mix": "replace", "distill": "hard", "sampling.temperature": 1.0}
    y_GxS = ds["loss"].sel(point).transpose("generation", "seed").values
    np.testing.assert_allclose(slopes.sel(point).transpose("seed").values,
                               np.polyfit(ds["generation"].values, y_GxS, 1)[0], rtol=1e-10)
    # a metric with no value at generation 0 (agreement with a teacher) is fitted from 1
    later = ds["loss"].where(ds["generation"] > 0)
    np.testing.assert_allclose(stats.slopes(later).sel(point).transpose("seed").values,
                               np.polyfit(ds["generation"].values[1:], y_GxS[1:], 1)[0],
                               rtol=1e-10)
    # one seed missing a generation the others have: NaN for that seed alone
    holed = ds["loss"].copy()
    holed[2, 0] = np.nan
    fitted = stats.slopes(holed)
    assert fitted.isel(seed=0).isnull().all() and fitted.isel(seed=1).notnull().all()
    assert stats.slopes(ds["loss"].isel(generation=[3])).isnull().all()
    assert stats.slopes(ds["loss"] * np.nan).isnull().all()  # no values at all


def test_comparisons_of_the_change_per_generation_pair_each_seeds_slopes():
    ds = synthetic(seeds=8)
    table = stats.comparison_table(ds, ["loss"], "mix", None)
    assert len(table) == 3  # accumulate against replace at 3 temperatures
    slopes = stats.slopes(ds["loss"]).sel(distill="hard", **{"sampling.temperature": 0.8})
    row = table[table["at"] == "sampling.temperature=0.8"].iloc[0]
    xa, xb = (slopes.sel(mix=m).transpose("seed").values for m in ("accumulate", "replace"))
    assert row["p"] == pytest.approx(scipy.stats.wilcoxon(xa, xb).pvalue)
    assert row["mean_diff"] == pytest.approx(np.mean(xa - xb))
