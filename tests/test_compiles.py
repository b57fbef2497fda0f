"""A chain compiles once: no retracing across generations, lanes or chunks of lanes.

Each trace of a chain's ``start`` or ``step`` calls the world's ``measure`` once, so the
number of ``measure`` calls in Python is the number of traces (and so of compiles).
"""

import dataclasses

from sim import experiment
from sim.config import Config
from sim.distill import TrainConfig
from sim.lanes import LanesConfig
from sim.mix import MixConfig, MixPolicy
from sim.worlds.gaussian import GaussianConfig
from sim.worlds.markov_lm import MarkovLMConfig


def _traces(cfg: Config) -> int:
    """How many times a run traces the world's ``measure``."""
    built = experiment.build(cfg)
    world = built.chain.world
    measure, calls = world.measure, []

    def counted(*args, **kwargs):
        calls.append(None)
        return measure(*args, **kwargs)

    world.measure = counted
    experiment.run(built)
    return len(calls)


def test_a_closed_form_chain_traces_start_and_step_once():
    cfg = Config(world=GaussianConfig(dim=2, n_samples=8),
                 mix=MixConfig(policy=MixPolicy.accumulate), generations=1, seeds=2,
                 progress=False)
    assert _traces(cfg) == 2
    # more generations, and lanes in three chunks (the last one padded): still once each
    assert _traces(dataclasses.replace(cfg, generations=6, seeds=5,
                                       lanes=LanesConfig(chunk_size=2))) == 2


def test_a_small_lm_chain_traces_start_and_step_once():
    cfg = Config(world=MarkovLMConfig(n_samples=8, seq_len=4, vocab_size=4, width=8, layers=1,
                                      heads=1, eval_sequences=4),
                 train=TrainConfig(steps=1, batch_size=2), generations=3, seeds=3,
                 lanes=LanesConfig(chunk_size=2), progress=False)
    assert _traces(cfg) == 2
