"""A chain compiles once: no retracing across generations, lanes or chunks of lanes.

Each trace of a chain's ``start`` or ``step`` fits once (the world's ``fit`` or
``fit_statistics``), and each trace of its ``measure`` calls the world's ``measure`` once,
so the number of those calls in Python is the number of traces (and so of compiles).
"""

import dataclasses

from sim import experiment
from sim.config import Config
from sim.distill import TrainConfig
from sim.lanes import LanesConfig
from sim.mix import MixConfig, MixPolicy
from sim.worlds.gaussian import GaussianConfig
from sim.worlds.markov_lm import MarkovLMConfig

COUNTED = ("fit", "fit_statistics", "measure")


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


def test_a_small_lm_chain_traces_each_program_once():
    cfg = Config(world=MarkovLMConfig(n_samples=8, seq_len=4, vocab_size=4, width=8, layers=1,
                                      heads=1, eval_sequences=4),
                 train=TrainConfig(steps=1, batch_size=2), generations=3, seeds=3,
                 lanes=LanesConfig(chunk_size=2), progress=False)
    one_generation = _traces(dataclasses.replace(cfg, generations=1, seeds=2,
                                                 lanes=LanesConfig()))
    assert one_generation["measure"] == 1
    # (a fit lane by lane inside vmapped lanes traces each program's fit twice: for one
    # lane and for the loop over lanes)
    assert _traces(cfg) == one_generation
