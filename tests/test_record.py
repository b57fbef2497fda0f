"""Results datasets: dims, metadata, combining runs of a sweep, atomic writes."""

import numpy as np
import xarray as xr
import yaml

from sim.record import run_attrs, to_dataset, write_atomic
from sim.worlds.base import MetricInfo
from sim.mix import MixPolicy

INFO = {"a": MetricInfo("metric a", "nats", "what a is"), "b": MetricInfo("metric b"),
        "c": MetricInfo("per n", dims=("n",), coords=((1, 2, 3, 4),))}


def _ds(swept=None):
    metrics = {"a": np.arange(6.0).reshape(3, 2), "b": np.ones((3, 2)),
               "c": np.zeros((3, 2, 4))}
    return to_dataset(metrics, INFO, swept, run_attrs("x: 1\n", 1.5, 1))


def test_dims_and_metadata():
    ds = _ds()
    assert ds.a.dims == ("generation", "seed")
    assert ds.sizes == {"generation": 3, "seed": 2, "n": 4}
    assert ds.c.dims == ("generation", "seed", "n") and ds.n.values.tolist() == [1, 2, 3, 4]
    assert ds.a.attrs["long_name"] == "metric a" and ds.a.attrs["units"] == "nats"
    assert "units" not in ds.b.attrs
    assert yaml.safe_load(ds.attrs["config"]) == {"x": 1}
    assert "jax==" in ds.attrs["versions"] and ds.attrs["backend"] == "cpu"
    assert ds.attrs["wall_time_s"] == 1.5


def test_swept_values_become_length_one_dims_that_combine():
    runs = [_ds({"mix": MixPolicy.replace, "world.n_samples": 10}),
            _ds({"mix": "accumulate", "world.n_samples": 10}),
            _ds({"mix": "replace", "world.n_samples": 20}),
            _ds({"mix": "accumulate", "world.n_samples": 20})]
    assert runs[0].a.dims == ("generation", "seed", "mix", "world.n_samples")
    combined = xr.combine_by_coords(runs, combine_attrs="drop_conflicts")
    assert combined.sizes == {"generation": 3, "seed": 2, "n": 4, "mix": 2,
                              "world.n_samples": 2}
    assert sorted(combined["mix"].values.tolist()) == ["accumulate", "replace"]


def test_write_atomic_round_trips_and_leaves_no_temp_file(tmp_path):
    ds = _ds({"mix": "replace"})
    path = write_atomic(ds, tmp_path / "out" / "results.nc")
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.nc"]
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), ds)


def test_attrs_name_the_commit_and_whether_the_checkout_was_dirty():
    attrs = run_attrs("x: 1\n", 1.0, 2)
    assert len(attrs["git_commit"]) == 40 and int(attrs["git_commit"], 16) >= 0
    assert attrs["git_dirty"] in (0, 1)


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path, monkeypatch):
    """A full disk mid-write: the half-written temporary is removed, nothing is renamed."""
    ds = _ds()

    def write_half_then_fail(self, path, **kwargs):
        open(path, "wb").write(b"CDF\x01 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", write_half_then_fail)
    try:
        write_atomic(ds, tmp_path / "results.nc")
    except OSError as error:
        assert error.errno == 28
    else:
        raise AssertionError("the write should have failed")
    assert list(tmp_path.iterdir()) == []
