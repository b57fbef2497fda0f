"""analysis.figures and analysis.style under the Agg backend: what each figure draws."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from test_analysis_data import VOCAB, synthetic  # noqa: E402

from analysis import figures, style  # noqa: E402
from analysis.load import own_dims, swept_dims  # noqa: E402
from analysis.stats import seed_summary  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def data_lines(ax):
    """Lines that draw data (not error-bar caps)."""
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 1]


def test_swept_and_own_dims_of_length_one_and_more():
    ds = synthetic()
    assert swept_dims(ds) == ["mix", "distill", "sampling.temperature"]
    assert figures.varied_dims(ds) == ["mix", "sampling.temperature"]
    assert own_dims(ds["distinct_n"], ds) == ["n"]
    assert own_dims(ds["loss"], ds) == []


def test_collapse_curves_one_line_and_band_per_swept_point():
    ds = synthetic()
    fig = figures.collapse_curves(ds, "loss")
    (ax,) = fig.axes
    lines = data_lines(ax)
    assert len(lines) == 2 * 3  # mix x temperature; distill has one value
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 6
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:2] == ["accumulate, 0.5", "accumulate, 0.8"]
    assert fig.legends[0].get_title().get_text() == "mix, sampling.temperature"
    assert ax.get_ylabel() == "synthetic loss (nats)"
    assert ax.get_xlabel() == "generation (0 = fitted on real data)"
    summary = seed_summary(ds["loss"].sel(distill="hard"))
    first = summary.sel({"mix": "accumulate", "sampling.temperature": 0.5})
    np.testing.assert_allclose(lines[0].get_ydata(), first["mean"].values)
    np.testing.assert_array_equal(lines[0].get_xdata(), ds["generation"].values)
    # the data limits span the bands of every line
    y0, y1 = ax.dataLim.intervaly
    assert y0 == pytest.approx(float(summary["ci_low"].min()))
    assert y1 == pytest.approx(float(summary["ci_high"].max()))
    # colour by mix, line style by temperature
    assert lines[0].get_color() == lines[1].get_color() != lines[3].get_color()
    assert lines[0].get_linestyle() != lines[1].get_linestyle()


def test_collapse_curves_of_a_single_run_has_one_unlabelled_line():
    ds = synthetic(swept={})
    (ax,) = figures.collapse_curves(ds, "loss").axes
    assert len(data_lines(ax)) == 1
    assert ax.get_legend() is None


def test_small_multiples_one_panel_per_value_of_the_own_dim():
    ds = synthetic()
    fig = figures.small_multiples(ds, "distinct_n")
    assert [ax.get_title() for ax in fig.axes] == ["n = 1", "n = 2", "n = 3", "n = 4"]
    assert all(len(data_lines(ax)) == 6 for ax in fig.axes)
    assert fig.axes[0].get_ylabel() == "distinct n-grams"
    mean = ds["distinct_n"].sel(n=4, mix="replace", distill="hard").mean("seed")
    line = data_lines(fig.axes[3])[3]  # replace, temperature 0.5
    np.testing.assert_allclose(line.get_ydata(), mean.sel({"sampling.temperature": 0.5}))
    with pytest.raises(ValueError, match="own dim"):
        figures.small_multiples(ds, "loss")


def test_heatmap_shows_the_seed_means_annotated():
    ds = synthetic()
    fig = figures.heatmap(ds, "loss", generation=3)
    ax = fig.axes[0]
    (image,) = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    mean = ds["loss"].sel(generation=3, distill="hard").mean("seed")
    np.testing.assert_allclose(image.get_array(), mean.transpose("sampling.temperature", "mix"))
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 6
    assert f"{float(mean.sel(mix='replace', **{'sampling.temperature': 1.0})):.3g}" in texts
    assert ax.get_xlabel() == "mix" and ax.get_ylabel() == "sampling.temperature"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["accumulate", "replace"]
    assert fig.axes[1].get_ylabel() == "synthetic loss (nats)"  # the colour bar
    with pytest.raises(ValueError, match="two swept dims"):
        figures.heatmap(synthetic(swept={"mix": ["a", "b"]}), "loss", 1)


def test_tails_one_curve_per_generation_with_the_zipf_truth():
    ds = synthetic(swept={"mix": ["replace"]})
    fig = figures.tails(ds)
    ax = fig.axes[0]
    lines = data_lines(ax)
    assert len(lines) == ds.sizes["generation"] + 1
    truth = lines[-1]
    assert truth.get_label().startswith("truth (Zipf, s = 1")
    zipf = 1.0 / np.arange(1, VOCAB + 1)
    np.testing.assert_allclose(truth.get_ydata(), zipf / zipf.sum())
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    np.testing.assert_allclose(lines[0].get_ydata(),
                               ds["rank_frequency"].isel(generation=0, mix=0).mean("seed"))


def test_tails_without_a_derivable_truth_draws_none():
    ds = synthetic(swept={"mix": ["a", "b"]})
    ds.attrs["config"] = "world:\n  path: README.md\n"  # a text world: truth not in config
    fig = figures.tails(ds)
    assert len(fig.axes) == 3  # two panels and the generation colour bar
    assert all(len(data_lines(ax)) == ds.sizes["generation"] for ax in fig.axes[:2])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["mix=a", "mix=b"]
    assert [t.get_text() for t in fig.axes[0].texts] == ["true frequencies: not in the config"]


def test_bias_propagation_one_panel_per_bias_metric_present():
    ds = synthetic()
    ds["prior_bias"] = (ds["trait_rate"] * 0 + 0.1).assign_attrs(long_name="prior bias")
    ds["subliminal_accuracy"] = ds["trait_rate"] * np.nan  # no values: no panel
    fig = figures.bias_propagation(ds)
    assert [ax.get_ylabel() for ax in fig.axes] == ["rate of the planted trait",
                                                   "prior bias"]
    assert all(len(data_lines(ax)) == 6 for ax in fig.axes)


def test_retention_cost_one_point_per_swept_value_at_the_means():
    ds = synthetic(swept={"student.width": [16, 32, 64]})
    fig = figures.retention_cost(ds, generation=2)
    ax = fig.axes[0]
    points = [line for line in ax.get_lines() if line.get_marker() not in ("", "None", "|", "_")]
    assert len(points) == 3
    at = ds.sel(generation=2).mean("seed")
    for point, width in zip(points, [16, 32, 64]):
        assert point.get_xdata()[0] == pytest.approx(float(at["cost_reduction"].sel(
            {"student.width": width})))
        assert point.get_ydata()[0] == pytest.approx(float(at["retention"].sel(
            {"student.width": width})))
    assert ax.get_xlabel() == "training cost saved" and ax.get_ylabel() == "quality retained"
    # two swept keys: the colour tells the first apart, the marker the second (as the curves'
    # colour and line style do)
    ds = synthetic(swept={"distill": ["hard", "soft"], "student.width": [16, 32, 64]})
    ax = figures.retention_cost(ds, generation=2).axes[0]
    points = [line for line in ax.get_lines() if line.get_marker() not in ("", "None", "|", "_")]
    styles = [(line.get_color(), line.get_marker()) for line in points]
    assert len(set(styles)) == 6
    assert [len({c for c, _ in styles[i:i + 3]}) for i in (0, 3)] == [1, 1]  # one per objective
    assert [m for _, m in styles[:3]] == [m for _, m in styles[3:]]  # one per width


def test_axis_labels_wrap_long_names_and_add_units():
    ds = synthetic()
    ds["loss"].attrs["long_name"] = "a long name " * 6
    assert style.label(ds["loss"]).count("\n") >= 1
    assert style.label(ds["loss"]).endswith("(nats)")


@pytest.mark.parametrize("fmt", ["pdf", "png", "svg"])
def test_same_data_same_bytes(tmp_path, fmt):
    ds = synthetic()
    first = style.save(figures.collapse_curves(ds, "loss"), tmp_path / "a", fmt).read_bytes()
    second = style.save(figures.collapse_curves(ds, "loss"), tmp_path / "b", fmt).read_bytes()
    assert first == second
    if fmt == "pdf":
        assert b"/FontFile2" in first  # TrueType fonts embedded (fonttype 42)
        assert b"/CreationDate" not in first
