"""Diverged lanes: marked from their first blown-up generation on, their metrics NaN, the
other lanes untouched, and the summary says so."""

import dataclasses

import numpy as np

from sim import experiment
from sim.config import Config
from sim.distill import TrainConfig
from sim.divergence import mark_diverged
from sim.grid import GridConfig, TrainGrid
from sim.summary import format_divergence
from sim.worlds.digits import DigitsConfig


def test_a_lane_stays_diverged_and_its_metrics_go_nan_from_then_on():
    metrics = {"train_loss": np.array([[1.0, 1.0, 1.0], [2e3, 1.0, np.nan], [3.0, 1.0, 1.0]]),
               "accuracy": np.full((3, 3), 0.5),
               "distinct_n": np.ones((3, 3, 4))}
    out = mark_diverged(metrics, bound=1e3)
    np.testing.assert_array_equal(out["diverged"], [[0, 0, 0], [1, 0, 1], [1, 0, 1]])
    assert np.isnan(out["accuracy"][1:, 0]).all() and np.isnan(out["accuracy"][1:, 2]).all()
    assert (out["accuracy"][:, 1] == 0.5).all() and (out["accuracy"][0] == 0.5).all()
    assert np.isnan(out["distinct_n"][2, 0]).all() and (out["distinct_n"][:, 1] == 1).all()
    np.testing.assert_array_equal(out["train_loss"], metrics["train_loss"])  # kept


def test_an_exploding_learning_rate_diverges_without_touching_the_other_lanes():
    cfg = Config(world=DigitsConfig(hidden=(8,), classes=(3, 5)),
                 train=TrainConfig(steps=30, batch_size=16),
                 grid=GridConfig(train=TrainGrid(lr=[3e-3, 1e6])),
                 generations=1, seeds=2, progress=False)
    ds = experiment.run(experiment.build(cfg))
    sane, blown = (ds.sel({"train.lr": lr}) for lr in (3e-3, 1e6))
    assert not sane.diverged.any() and sane.accuracy.notnull().all()
    assert blown.diverged.all() and blown.accuracy.isnull().all()
    assert not np.isfinite(blown.train_loss.isel(generation=0)).any()  # NaN or inf
    alone = experiment.run(experiment.build(dataclasses.replace(
        cfg, grid=GridConfig(), train=dataclasses.replace(cfg.train, lr=3e-3))))
    np.testing.assert_allclose(sane.accuracy, alone.accuracy, rtol=1e-5)
    assert "diverged: 2 of 4 lanes" in format_divergence(ds)
    assert format_divergence(alone) is None
