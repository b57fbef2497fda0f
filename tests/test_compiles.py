"""A chain compiles once: no retracing across generations, lanes or chunks of lanes.

Each trace of a chain's ``start``, ``step`` or shared ``learn`` fits once (the world's
``fit`` or ``fit_statistics``), and each trace of its ``measure`` calls the world's
``measure`` once, so the number of those calls in Python is the number of traces (and so
of compiles).
"""

import dataclasses

import numpy as np
import xarray as xr

from sim import experiment, jaxlib_at_least
from sim.config import Config
from sim.distill import DistillConfig, Objective, TrainConfig
from sim.lanes import LanesConfig
from sim.mix import MixConfig, MixPolicy
from sim.worlds.gaussian import GaussianConfig
from sim.worlds.markov_lm import MarkovLMConfig

COUNTED = ("fit", "fit_statistics", "measure")
# Fitting and measuring lane by lane inside vmapped lanes (jax.custom_batching.
# sequential_vmap) traces each of the world's fit and measure twice a program before JAX
# 0.11 (for one lane and for the loop over lanes), once from 0.11 on.
LANEWISE = 1 if jaxlib_at_least(0, 11) else 2


def _traces(cfg: Config) -> dict[str, int]:
    """How many times a run traces each of the world's ``COUNTED`` methods it has."""
    built = experiment.build(cfg)
    world = built.chain.world
    calls = {name: 0 for name in COUNTED if hasattr(world, name)}

    def counted(name, method):
        def call(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)
        return call

    for name in calls:
        setattr(world, name, counted(name, getattr(world, name)))
    experiment.run(built)
    return calls


def test_a_closed_form_chain_traces_each_program_once():
    cfg = Config(world=GaussianConfig(dim=2, n_samples=8),
                 mix=MixConfig(policy=MixPolicy.accumulate), generations=1, seeds=2,
                 progress=False)
    once = {"fit": 1, "fit_statistics": 1, "measure": 1}  # start, step, and one measure
    assert _traces(cfg) == once
    # more generations, and lanes in three chunks (the last one padded): still once each
    assert _traces(dataclasses.replace(cfg, generations=6, seeds=5,
                                       lanes=LanesConfig(chunk_size=2))) == once


SMALL_LM = Config(world=MarkovLMConfig(n_samples=8, seq_len=4, vocab_size=4, width=8,
                                      layers=1, heads=1, eval_sequences=4),
                  train=TrainConfig(steps=1, batch_size=2), generations=3, seeds=3,
                  lanes=LanesConfig(chunk_size=2), progress=False)


def test_a_small_lm_chain_traces_each_program_once():
    untaught = _traces(dataclasses.replace(SMALL_LM, generations=0, seeds=2,
                                           lanes=LanesConfig()))
    assert untaught == {"fit": LANEWISE, "measure": LANEWISE}
    # later generations, in chunks of lanes, compile no second fit (one ``learn`` for
    # every generation)
    assert _traces(SMALL_LM) == untaught
    # a student that queries its teacher's logits fits differently from generation 0
    kl = dataclasses.replace(SMALL_LM, distill=DistillConfig(objective=Objective.soft))
    assert _traces(kl) == {"fit": 2 * LANEWISE, "measure": LANEWISE}


def test_one_fit_for_every_generation_gives_what_two_give():
    built = experiment.build(SMALL_LM)
    assert built.chain.shares_fit
    shared = experiment.run(built)
    built = experiment.build(SMALL_LM)
    built.chain.world.untaught_teacher = lambda: None
    assert not built.chain.shares_fit
    apart = experiment.run(built)
    measured = [name for name in shared.data_vars if "generation" in shared[name].dims
                and name != "wall_time_s" and shared[name].dtype.kind == "f"]
    assert "nll_real" in measured and "train_loss" in measured
    xr.testing.assert_allclose(shared[measured], apart[measured], rtol=1e-5)
    assert np.isfinite(shared["nll_real"]).all()
