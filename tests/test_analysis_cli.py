"""python -m analysis and analysis.load: a synthetic sweep directory to figures, tables and
report; bad paths, unfinished sweeps and bad options give one line and exit status 2."""

from __future__ import annotations

import re
import subprocess
import sys

import matplotlib.pyplot as plt
import pytest
from test_analysis_data import synthetic, write_sweep

from analysis import load_sweep
from analysis.__main__ import main
from analysis.load import find_runs
from analysis.outputs import plan


@pytest.fixture
def sweep(tmp_path):
    """Two jobs split along ``mix`` (a length-1 dim in each), each sweeping the
    temperature inside the job (a dim of length 3), as a vectorised sweep writes."""
    directory = tmp_path / "multirun" / "12-00-00"
    write_sweep(directory, synthetic(), "mix")
    return directory


def test_load_sweep_combines_jobs_and_skips_ones_still_running(sweep):
    (sweep / "2" / ".hydra").mkdir(parents=True)  # started, no results.nc yet
    (sweep / "2" / ".results.nc.123.tmp").write_bytes(b"partial")
    runs = find_runs(sweep)
    assert [p.name for p in runs.pending] == ["2"] and len(runs.results) == 2
    ds = load_sweep(sweep)
    assert ds.sizes["mix"] == 2 and ds.sizes["sampling.temperature"] == 3


def test_cli_writes_figures_tables_and_a_self_contained_report(sweep, capsys):
    assert main([str(sweep), "--format", "png", "--generation", "3"]) == 0
    out = capsys.readouterr().out
    figures = sweep / "figures"
    names = {p.name for p in figures.iterdir()}
    expected = {"curves_loss.png", "curves_retention.png", "multiples_distinct_n.png",
                "tails_rank_frequency.png", "bias_propagation.png", "retention_cost.png",
                "heatmap_loss.png", "summary.md", "summary.tex", "rates.md", "rates.tex",
                "comparisons.md", "comparisons.tex", "rate_comparisons.md",
                "rate_comparisons.tex"}
    assert expected <= names
    assert "curves_params.png" not in names  # constant: not drawn
    assert "curves_trait_rate.png" not in names  # drawn in bias_propagation
    assert f"report:  {sweep / 'report.html'}" in out and str(figures) in out
    summary = (figures / "summary.md").read_text()
    assert summary.startswith("Generation 3: mean ± standard error over 6 seeds")
    assert "| replace | 1.0 |" in summary
    assert r"\toprule" in (figures / "summary.tex").read_text()
    assert "Holm" in (figures / "comparisons.md").read_text()
    assert "| loss (nats per generation) |" in (figures / "rates.md").read_text()
    report = (sweep / "report.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", report)  # nothing to fetch
    assert "<script" not in report
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', report)
    assert len(images) == len([n for n in names if n.endswith(".png")])
    assert "zipf_exponent: 1.0" in report and "abc123" in report  # config, provenance


def test_cli_metrics_option_limits_the_figures(sweep, capsys):
    assert main([str(sweep), "--metrics", "loss", "--format", "png"]) == 0
    names = {p.name for p in (sweep / "figures").iterdir()}
    assert {n for n in names if n.endswith(".png")} == {"curves_loss.png", "heatmap_loss.png"}


def test_cli_compares_the_swept_key_asked_for(sweep, capsys):
    """By default the first swept key with two values (mix); --compare picks another."""
    assert main([str(sweep), "--metrics", "loss", "--format", "png"]) == 0
    table = (sweep / "figures" / "comparisons.md").read_text()
    assert table.startswith("Wilcoxon signed-rank test of mix = a against b")
    assert main([str(sweep), "--metrics", "loss", "--format", "png",
                 "--compare", "sampling.temperature"]) == 0
    table = (sweep / "figures" / "comparisons.md").read_text()
    assert table.startswith("Wilcoxon signed-rank test of sampling.temperature = a against b")
    assert "| loss | 0.5 | 0.8 | mix=accumulate |" in table


def test_cli_refuses_a_sweep_still_running_unless_partial(sweep, capsys):
    (sweep / "2" / ".hydra").mkdir(parents=True)
    assert main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "1 of 3 jobs have no results.nc yet (2; still running, or failed)" in err
    assert main([str(sweep), "--partial", "--metrics", "loss", "--format", "png"]) == 0


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "does not exist"),
    (["{empty}"], "holds no results.nc"),
    (["{started}"], "has no results.nc yet: 1 job started, none finished"),
    (["{sweep}", "--metrics", "loss,nope"], "--metrics: unknown metric 'nope'; this Dataset "
                                             "has: loss, rank_frequency"),
    (["{sweep}", "--generation", "9"], "--generation=9 is not in the Dataset: it has "
                                       "generations 0..4"),
    (["{sweep}", "--format", "jpg"], "--format: 'jpg' is not one of pdf, png, svg"),
    (["{sweep}", "--generation", "x"], "argument --generation: invalid int value"),
    (["{sweep}", "--compare", "distill"], "--compare=distill is not a swept key with two or "
                                          "more values; this Dataset's: mix, "
                                          "sampling.temperature"),
])
def test_cli_errors_are_one_line_with_exit_status_2(sweep, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "started" / "0" / ".hydra").mkdir(parents=True)
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty",
             "started": tmp_path / "started", "sweep": sweep}
    argv = [a.format(**paths) for a in args]
    with pytest.raises(SystemExit) if "invalid" in message else _no_raise() as stop:
        assert main(argv) == 2
    if stop is not None and hasattr(stop, "value"):
        assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (sweep / "figures").exists()


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_module_entry_point_exits_2_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr


def test_plan_fixes_swept_keys_beyond_two_for_heatmaps():
    ds = synthetic(swept={"mix": ["a", "b"], "x": [1, 2], "y": [1, 2, 3]})
    plots = {p.name: p for p in plan(ds, ["loss", "params"], 2, None)}
    assert "curves_params" not in plots  # constant
    heatmap = plots["heatmap_loss"]
    assert heatmap.caption.endswith("over mix and x at y=1 (mean over 6 seeds)")
    fig = heatmap.draw()
    assert len(fig.axes[0].texts) == 2 * 2
    plt.close(fig)
