"""Lanes: reproducibility, strategies, and the chain's generation loop."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from sim import experiment, jaxlib_at_least
from sim.config import Config
from sim.errors import ConfigError
from sim.lanes import LanesConfig, Strategy
from sim.mix import MixConfig, MixPolicy
from sim.worlds.gaussian import GaussianConfig

BASE = Config(world=GaussianConfig(dim=2, n_samples=16),
              mix=MixConfig(policy=MixPolicy.accumulate_subsample, subsample_size=20),
              generations=3, seeds=4, progress=False)


def _run(**changes):
    return experiment.run(experiment.build(dataclasses.replace(BASE, **changes)))


def test_a_lane_does_not_depend_on_how_many_lanes_run():
    # to float32 rounding: on 2 CPU devices, 2 lanes run one per device, 5 on one device
    # (sim.lanes.lane_mesh), and XLA vectorises a batch of 1 otherwise than one of 5
    few, many = _run(seeds=2), _run(seeds=5)
    np.testing.assert_allclose(few.w2_to_truth, many.w2_to_truth.isel(seed=slice(0, 2)),
                               rtol=1e-5)
    # the attrs name the devices the lanes ran on, not the process's
    here = jax.local_device_count()
    assert few.attrs["device_count"] == min(2, here)
    assert many.attrs["device_count"] == (5 if here >= 5 else 1)  # 5 lanes: 5 is prime


def test_strategies_agree():
    vmapped = _run(lanes=LanesConfig(strategy=Strategy.vmap))
    mapped = _run(lanes=LanesConfig(strategy=Strategy.map, batch_size=3))
    np.testing.assert_allclose(vmapped.w2_to_truth, mapped.w2_to_truth, rtol=1e-5)


def test_same_seed_same_results_other_seed_other_results():
    a, b, c = _run(), _run(), _run(seed=1)
    np.testing.assert_array_equal(a.mean_error, b.mean_error)
    assert not np.allclose(a.mean_error, c.mean_error)


def test_generations_differ_and_zero_generations_work():
    ds = _run()
    assert ds.sizes == {"generation": 4, "seed": 4}
    assert not np.allclose(ds.w2_to_truth.isel(generation=0), ds.w2_to_truth.isel(generation=1))
    assert _run(generations=0).sizes["generation"] == 1


@pytest.mark.parametrize("changes,key", [
    ({"generations": -1}, "generations=-1"),
    ({"seeds": 0}, "seeds=0"),
    ({"lanes": LanesConfig(batch_size=0)}, "lanes.batch_size=0"),
    ({"mix": MixConfig(policy=MixPolicy.fresh, real_fraction=-0.1)}, "mix.real_fraction"),
])
def test_bad_values_fail_at_build_naming_the_key(changes, key):
    with pytest.raises(ConfigError, match=key):
        experiment.build(dataclasses.replace(BASE, **changes))


SHARDED = """
import json, jax
from sim import experiment, lanes
from sim.config import Config
from sim.mix import MixConfig, MixPolicy
from sim.worlds.gaussian import GaussianConfig
keys = lanes.shard(lanes.lane_keys(0, 4), 4)
cfg = Config(world=GaussianConfig(dim=2, n_samples=16), generations=3, seeds=4, progress=False,
             mix=MixConfig(policy=MixPolicy.accumulate_subsample, subsample_size=20))
ds = experiment.run(experiment.build(cfg))
print(json.dumps([ds.attrs["device_count"], len(keys.sharding.device_set),
                  ds.w2_to_truth.values.tolist()]))
"""


def test_lanes_split_across_devices_with_identical_results():
    # this process has one CPU device per core (sim/__init__.py); the subprocess another
    # number of devices, and the suite's other flags (conftest.py), for equal numbers
    here = jax.local_device_count()
    there = 1 if here > 1 else 2
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={there}"])}
    out = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    devices, splits, values = json.loads(out.stdout.strip().splitlines()[-1])
    assert devices == splits == there
    np.testing.assert_array_equal(values, _run().w2_to_truth.values)


def _flags_after_importing_sim(**env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",
                                                                  "JAX_NUM_CPU_DEVICES")}
    out = subprocess.run([sys.executable, "-c", "import os, sim; print(os.environ['XLA_FLAGS'])"],
                         env={**environ, **env, "PYTHONPATH": str(Path(__file__).parents[1])},
                         capture_output=True, text=True, timeout=60, check=True)
    return [f for f in out.stdout.split() if "device_count" in f]


@pytest.mark.skipif(not jaxlib_at_least(0, 10),
                    reason="sim sets its XLA flags only with jaxlib 0.10 or newer")
def test_importing_sim_makes_one_cpu_device_per_core_unless_the_count_is_set():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _flags_after_importing_sim() == [f"--xla_force_host_platform_device_count={cores}"]
    assert _flags_after_importing_sim(JAX_NUM_CPU_DEVICES="3") == []
    preset = "--xla_force_host_platform_device_count=1"
    assert _flags_after_importing_sim(XLA_FLAGS=preset) == [preset]


def test_lane_by_lane_inside_vmapped_lanes_gives_the_vmapped_numbers():
    # The LM world samples, fits and measures one lane at a time on the CPU (auto);
    # explicit strategy=vmap does each for the vmapped lanes. Same lanes, same numbers,
    # generation 1 (learnt from the teacher's sampled text) included.
    from sim.distill import TrainConfig
    from sim.worlds.markov_lm import MarkovLMConfig
    cfg = Config(world=MarkovLMConfig(n_samples=16, seq_len=6, vocab_size=6, width=8,
                                      layers=1, heads=2),
                 train=TrainConfig(steps=4, batch_size=4), generations=1, seeds=3,
                 progress=False)
    auto = experiment.build(cfg)
    assert auto.chain.lane_by_lane
    vmapped = experiment.build(dataclasses.replace(cfg, lanes=LanesConfig(
        strategy=Strategy.vmap)))
    assert not vmapped.chain.lane_by_lane
    a, b = experiment.run(auto), experiment.run(vmapped)
    assert not np.allclose(a.nll_real.isel(seed=0), a.nll_real.isel(seed=1))
    np.testing.assert_allclose(a.nll_real, b.nll_real, rtol=1e-4)
    np.testing.assert_allclose(a.kl_to_truth, b.kl_to_truth, rtol=1e-3, atol=1e-5)
    # the measure's own sample, drawn lane by lane or vmapped, is the same sample
    for name in ("distinct_n", "self_bleu", "vendi"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, err_msg=name)
