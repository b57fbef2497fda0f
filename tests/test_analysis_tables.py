"""analysis.tables: values against the Dataset, and the Markdown / LaTeX / HTML text."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from test_analysis_data import synthetic

from analysis import stats, tables


def test_summary_table_values_are_the_seed_statistics_of_the_dataset():
    ds = synthetic()
    table = tables.summary_table(ds, ["loss", "distinct_n", "trait_rate"], generation=2)
    assert set(table["metric"]) == {"loss", "trait_rate"}  # distinct_n has its own dim
    assert len(table) == 2 * 6
    assert "distill" not in table.columns  # one value: not a column
    row = table[(table["metric"] == "loss") & (table["mix"] == "replace")
                & (table["sampling.temperature"] == 0.8)].iloc[0]
    x = ds["loss"].sel(generation=2, mix="replace", distill="hard",
                       **{"sampling.temperature": 0.8}).values
    assert row["mean"] == pytest.approx(np.mean(x))
    assert row["sem"] == pytest.approx(scipy.stats.sem(x))
    assert row["count"] == ds.sizes["seed"]
    assert row["ci_low"] < row["mean"] < row["ci_high"]


def test_rate_table_values_are_the_seed_statistics_of_the_slopes():
    ds = synthetic()
    ds["params"] = ds["loss"] * 0 + 100.0  # the same in every seed: no rate
    table = tables.rate_table(ds, ["loss", "distinct_n", "params"])
    assert set(table["metric"]) == {"loss"} and len(table) == 6
    row = table[(table["mix"] == "accumulate") & (table["sampling.temperature"] == 0.5)].iloc[0]
    x = stats.slopes(ds["loss"]).sel(mix="accumulate", distill="hard",
                                     **{"sampling.temperature": 0.5}).values
    assert row["mean"] == pytest.approx(np.mean(x)) and row["mean"] == pytest.approx(0.5, 0.1)
    assert row["sem"] == pytest.approx(scipy.stats.sem(x))
    header, _ = tables.text_table(table, ds, per="per generation")
    assert header[-1] == "loss (nats per generation)"
    # one seed: every metric varies over none, and each still has its slope
    one = synthetic(seeds=1)
    assert set(tables.rate_table(one, ["loss", "trait_rate"])["metric"]) == {"loss",
                                                                           "trait_rate"}


@pytest.mark.parametrize("mean, sem, text", [
    (0.59041, 0.00731, "0.5904 ± 0.0073"),
    (123.456, 12.3, "123 ± 12"),
    (2.0, 0.0, "2"),
    (1.5, float("nan"), "1.5"),
    (float("nan"), 0.1, "NaN"),
    (-0.000004, 0.00034, "0.00000 ± 0.00034"),  # no minus sign on a zero
])
def test_mean_pm_sem_rounds_to_two_significant_digits_of_the_error(mean, sem, text):
    assert tables.mean_pm_sem(mean, sem) == text


def test_text_table_of_a_sweep_puts_the_longer_list_down_the_rows():
    ds = synthetic()
    few = tables.summary_table(ds, ["loss"], 4)
    header, rows = tables.text_table(few, ds)
    assert header == ["mix", "sampling.temperature", "loss (nats)"]
    assert len(rows) == 6
    x = ds["loss"].sel(generation=4, mix="accumulate", distill="hard",
                       **{"sampling.temperature": 0.5}).values
    assert rows[0] == ["accumulate", "0.5", tables.mean_pm_sem(np.mean(x), scipy.stats.sem(x))]
    one_point = synthetic(swept={"mix": ["a", "b"]})
    many = tables.summary_table(one_point, ["loss", "trait_rate", "retention"], 4)
    header, rows = tables.text_table(many, one_point)
    assert header == ["metric", "mix=a", "mix=b"]
    assert [r[0] for r in rows] == ["loss (nats)", "trait_rate", "retention"]


def test_text_table_of_one_run_has_a_row_per_metric_with_its_interval():
    ds = synthetic(swept={})
    header, rows = tables.text_table(tables.summary_table(ds, ["loss", "params"], 1), ds)
    assert header == ["metric", "mean ± SE", "95% CI", "seeds"]
    assert rows[1] == ["params", "100", "[100, 100]", "6"]


def test_markdown_and_booktabs_latex():
    header, rows = ["metric", "a_b"], [["x_1 %", "0.5 ± 0.1"], ["y", "1"]]
    md = tables.markdown(header, rows).splitlines()
    assert md[0] == "| metric | a_b |" and md[1] == "|---|---:|"
    assert md[2] == "| x_1 % | 0.5 ± 0.1 |" and len(md) == 4
    tex = tables.latex(header, rows, caption="Generation 3")
    assert r"\begin{tabular}{lr}" in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"x\_1 \% & 0.5 $\pm$ 0.1 \\" in tex
    assert r"\caption{Generation 3}" in tex


def test_html_table_escapes_text():
    text = tables.html_table(["<a>"], [["x & y"]])
    assert "<th>&lt;a&gt;</th>" in text and "<td>x &amp; y</td>" in text
