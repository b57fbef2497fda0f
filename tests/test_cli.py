"""``python -m sim`` end to end, in a temporary working directory."""

from pathlib import Path

import numpy as np
import pytest

from analysis import load_run, load_sweep
from commands import run as sim


def results(cwd: Path) -> list[Path]:
    return sorted((cwd / "runs").rglob("results.nc"))


def test_run_writes_a_dataset_and_prints_a_summary(tmp_path):
    out = sim(tmp_path, "world=linreg", "mix=accumulate", "generations=3", "seeds=5",
              "world.n_samples=12", "world.dim=3")
    assert out.returncode == 0, out.stderr
    assert "test_mse" in out.stdout and "(mean ± std over 5 lanes)" in out.stdout
    [path] = results(tmp_path)
    assert (path.parent / ".hydra" / "config.yaml").exists()
    ds = load_run(path.parent)
    assert ds.sizes == {"generation": 4, "seed": 5}
    assert set(ds.data_vars) == {"test_mse", "weight_error", "synthetic_count", "wall_time_s",
                                 "peak_memory_bytes"}
    np.testing.assert_array_equal(ds.synthetic_count.isel(seed=0), [0, 12, 12, 12])
    # what each generation cost: compiling makes generations 0 and 1 the slowest
    assert ds.wall_time_s.dims == ds.peak_memory_bytes.dims == ("generation",)
    assert (ds.wall_time_s > 0).all() and ds.wall_time_s.sum() <= ds.attrs["wall_time_s"]
    assert (ds.peak_memory_bytes > 10e6).all() and (ds.peak_memory_bytes.diff("generation") >= 0).all()
    assert "policy: accumulate" in ds.attrs["config"]


@pytest.mark.slow  # a multirun of 4 jobs, 9-14 s
def test_multirun_datasets_combine_along_the_swept_keys(tmp_path):
    out = sim(tmp_path, "-m", "world=gaussian", "mix=accumulate", "mix.synthetic_decay=1,0.5",
              "world.n_samples=8,16", "generations=2", "seeds=3", "progress=false")
    assert out.returncode == 0, out.stderr
    paths = results(tmp_path)
    assert len(paths) == 4
    combined = load_sweep(tmp_path / "runs")
    assert combined.sizes == {"generation": 3, "seed": 3, "mix.synthetic_decay": 2,
                              "world.n_samples": 2}
    assert combined.w2_to_truth.notnull().all()
    # every job records its counts, the unscheduled (decay 1) ones too: n every generation
    counts = combined.synthetic_count.isel(seed=0).transpose(..., "world.n_samples", "generation")
    np.testing.assert_array_equal(counts.sel({"mix.synthetic_decay": 1.0}),
                                  [[0, 8, 8], [0, 16, 16]])
    np.testing.assert_array_equal(counts.sel({"mix.synthetic_decay": 0.5}),
                                  [[0, 8, 4], [0, 16, 8]])


@pytest.mark.parametrize("args,message", [
    (["seeds=0"], "error: seeds=0 is not allowed: an integer >= 1"),
    (["generations=-2"], "error: generations=-2"),
    (["mix=fresh", "mix.real_fraction=1.5"], "error: mix.real_fraction=1.5"),
    (["world=gaussian", "world.n_samples=2"], "error: world.n_samples=2"),
    (["world=gaussian", "generations=2", "mix.synthetic_schedule=[50,-1]"],
     "error: mix.synthetic_schedule=[50, -1] is not allowed"),
    (["world=nope"], "Could not find 'world/nope'"),
    (["world=gaussian", "world.dimm=3"], "Key 'dimm' not in 'GaussianConfig'"),
    (["seeds=many"], "could not be converted to Integer"),
    (["mix.policy=sometimes"], "Invalid value 'sometimes'"),
])
def test_bad_input_fails_fast_and_leaves_nothing(tmp_path, args, message):
    out = sim(tmp_path, *args)
    assert out.returncode != 0
    assert message in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    if message.startswith("error:"):
        assert out.returncode == 2 and out.stderr.strip().count("\n") == 0


def test_bad_input_in_a_multirun_leaves_nothing(tmp_path):
    out = sim(tmp_path, "-m", "seeds=0", "generations=1")
    assert out.returncode == 2
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_help_lists_the_users_groups_not_the_schemas(tmp_path):
    out = sim(tmp_path, "--help", fresh_interpreter=True)  # the whole `python -m sim`
    assert out.returncode == 0
    groups = out.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    for group in ("world: ", "mix: ", "distill: ", "experiment: "):
        assert group in groups
    assert "schema" not in groups
