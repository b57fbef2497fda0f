"""The benchmark command's pieces (the workloads themselves are timed by hand, not here)."""

import json

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
