"""Wall time of closed-form chains, per lane strategy, against this machine's matmul peak.

    python benchmarks/closed_form.py [--seeds 1000] [--repeats 2]

Prints one line per workload: wall time of the whole run (compile included, as a user sees
it) and of a second, warm run, in seconds, and lane-generations per second.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp

from sim import experiment
from sim.config import Config
from sim.lanes import LanesConfig, Strategy
from sim.mix import MixConfig, MixPolicy
from sim.worlds.gaussian import GaussianConfig
from sim.worlds.linreg import LinregConfig


def matmul_peak(n: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of a large float32 matmul on the default backend."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def workloads(seeds: int) -> dict[str, Config]:
    base = Config(world=GaussianConfig(), generations=100, seeds=seeds, progress=False)
    return {
        "gaussian G=100 replace": base,
        "gaussian G=100 accumulate": dataclasses.replace(
            base, mix=MixConfig(policy=MixPolicy.accumulate)),
        "linreg G=30 replace": dataclasses.replace(base, world=LinregConfig(), generations=30),
        "linreg G=30 accumulate": dataclasses.replace(
            base, world=LinregConfig(), generations=30,
            mix=MixConfig(policy=MixPolicy.accumulate)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    args = parser.parse_args()
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"matmul peak {matmul_peak() / 1e9:.0f} GFLOP/s")
    for name, cfg in workloads(args.seeds).items():
        for strategy in (Strategy.vmap, Strategy.map):
            run_cfg = dataclasses.replace(cfg, lanes=LanesConfig(strategy=strategy))
            times = []
            for _ in range(2):
                start = time.perf_counter()
                experiment.run(experiment.build(run_cfg))
                times.append(time.perf_counter() - start)
            rate = cfg.seeds * (cfg.generations + 1) / times[1]
            print(f"{name:28s} {strategy.value:5s} seeds={cfg.seeds}: cold {times[0]:6.2f} s, "
                  f"warm {times[1]:6.2f} s, {rate:9.0f} lane-generations/s")


if __name__ == "__main__":
    main()
