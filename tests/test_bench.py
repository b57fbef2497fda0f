"""The benchmark command's pieces (the workloads themselves are timed by hand, not here;
one tiny run checks a case the fields must handle)."""

import json

import pytest

from sim import bench


def test_overrides_replace_the_workloads_settings_of_the_same_key():
    assert bench.merged(("seeds=4", "mix=replace", "generations=2"), ["seeds=256"]) == [
        "mix=replace", "generations=2", "seeds=256"]


def test_points_expand_only_the_traced_sweeps():
    runs = bench.points(["mix=fresh", "sampling.temperature=0.5,1", "mix.real_fraction=0,0.1"])
    assert runs == [["mix=fresh", "sampling.temperature=0.5", "mix.real_fraction=0"],
                    ["mix=fresh", "sampling.temperature=0.5", "mix.real_fraction=0.1"],
                    ["mix=fresh", "sampling.temperature=1", "mix.real_fraction=0"],
                    ["mix=fresh", "sampling.temperature=1", "mix.real_fraction=0.1"]]


def test_a_row_has_every_field_and_is_json():
    row = bench.result_row("lm", wall_s=1.5, ceiling_flops_per_s=bench.matmul_ceiling((64,), 1))
    assert set(row) == set(bench.FIELDS) and row["ceiling_flops_per_s"] > 0
    assert row["compile_s"] is None and json.loads(json.dumps(row)) == row


def test_compile_seconds_count_overlapping_compiles_once(monkeypatch):
    """Two programs compiled at once (threads) and a compile nested in another's tracing
    take the wall time they cover, not the sum of their durations."""
    events = [(10.0, 14.0), (11.0, 13.0), (12.0, 15.0), (20.0, 21.0), (2.0, 3.0)]
    monkeypatch.setattr(bench, "_compile_intervals", events)
    assert bench.compile_seconds(since=9.0) == 5.0 + 1.0  # 10-15 and 20-21
    assert bench.compile_seconds(since=12.5) == 2.5 + 1.0  # from 12.5 only


def test_steal_is_the_stolen_share_of_the_cpu_time_between_two_readings():
    before = bench.cpu_jiffies("cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 1 2 3\n")
    after = bench.cpu_jiffies("cpu  160 0 60 900 0 0 0 80 7 0\n")
    assert before == (50, 1000) and after == (80, 1200)
    assert bench.steal_fraction(before, after) == 30 / 200
    assert bench.steal_fraction(None, after) is None and bench.steal_fraction(after, after) is None
    stolen, total = bench.cpu_jiffies()  # this host's (Linux)
    assert 0 <= stolen <= total


def test_the_fraction_is_of_the_ceiling_given_and_only_where_there_is_training():
    lm = bench.result_row("lm", wall_s=1.0, train_flops_per_s=1.5e11)
    gaussian = bench.result_row("gaussian mix=replace", wall_s=1.0)
    assert bench.against_ceiling(lm, 4e11) == lm | {"ceiling_flops_per_s": 4e11,
                                                   "train_fraction_of_ceiling": 0.375}
    assert bench.against_ceiling(gaussian, 4e11)["train_fraction_of_ceiling"] is None
    assert bench.against_ceiling(gaussian, 4e11)["ceiling_flops_per_s"] == 4e11


@pytest.mark.slow
def test_an_lm_run_without_a_sampled_generation_has_no_sampling_rate():
    row, = bench.bench_lm(["generations=0", "seeds=1", "train.steps=2", "world.width=16",
                           "world.n_samples=16", "world.seq_len=8", "world.vocab_size=8"])
    assert row["sample_tokens_per_s"] is None and row["sample_flops_per_s"] is None
    assert row["train_tokens_per_s"] > 0 and row["peak_memory_bytes"] > 0
