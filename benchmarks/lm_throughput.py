"""Training throughput of the default LM (``python -m sim``'s markov_lm world) on this machine.

    python benchmarks/lm_throughput.py [--seeds 4] [--batches 1,2] [--chain]

Prints, next to this machine's float32 matmul peak, the warm throughput of one
generation-0 fit (``train.steps`` AdamW steps) for ``--seeds`` lanes, under one wide vmap
and under lax.map over batches of ``--batches`` lanes, in tokens/s and model FLOP/s
(``train_flops_per_token``: 3 x the forward estimate of ``flops_per_token``). With
``--chain`` it also times whole default chains (compile included, as a user sees them)
per lane strategy.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from closed_form import matmul_peak  # noqa: E402

from sim import experiment  # noqa: E402
from sim.cli import CONF_DIR  # noqa: E402
from sim.config import Config, register_configs, to_config  # noqa: E402
from sim.lanes import LanesConfig, Strategy  # noqa: E402
from sim.models import transformer as tf  # noqa: E402


def default_config() -> Config:
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_config(compose("config", overrides=["progress=false"]))


def fit_throughput(cfg: Config, seeds: int, batch: int | None) -> tuple[float, float]:
    """(tokens/s, model FLOP/s) of a warm generation-0 fit over ``seeds`` lanes;
    ``batch=None``: one vmap, else lax.map over batches of ``batch`` lanes."""
    built = experiment.build(cfg)
    world = built.chain.world
    dyn = {k: jnp.float32(v) for k, v in built.dyn.items()}
    n = world.n_samples

    def one(key: jax.Array) -> jax.Array:
        data = world.sample_real(jax.random.fold_in(key, 1), n)
        return world.fit(key, data, jnp.ones(n), dyn, None).weights

    lanes = jax.vmap(one) if batch is None else (
        lambda keys: jax.lax.map(one, keys, batch_size=batch))
    run = jax.jit(lanes)
    keys = jax.random.split(jax.random.key(0), seeds)
    jax.block_until_ready(run(keys))
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        jax.block_until_ready(run(keys))
        best = min(best, time.perf_counter() - start)
    tokens = seeds * cfg.train.steps * cfg.train.batch_size * world.seq_len
    return tokens / best, tokens * tf.train_flops_per_token(world.teacher_arch) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--batches", default="1,2", help="lanes per lax.map batch")
    parser.add_argument("--chain", action="store_true", help="also time whole chains")
    args = parser.parse_args()
    cfg = default_config()
    arch = experiment.build(cfg).chain.world.teacher_arch
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"matmul peak {matmul_peak() / 1e9:.0f} GFLOP/s")
    print(f"default LM: {type(cfg.world).__name__} vocab {arch.vocab_size - 1} (+BOS), "
          f"context {arch.context}, {arch.layers} layers, width {arch.width}, "
          f"{arch.heads} heads; train {cfg.train.steps} steps x {cfg.train.batch_size} "
          f"sequences; {tf.train_flops_per_token(arch) / 1e3:.0f} kFLOP per trained token")
    batches = [int(b) for b in args.batches.split(",")]
    for label, batch in [("vmap", None)] + [(f"map/{b}", b) for b in batches]:
        tokens_s, flops_s = fit_throughput(cfg, args.seeds, batch)
        print(f"fit, {args.seeds} lanes, {label:5s}: {tokens_s:9.0f} tokens/s "
              f"{flops_s / 1e9:7.1f} GFLOP/s")
    if args.chain:
        for strategy, batch in [(Strategy.vmap, 256)] + [(Strategy.map, b) for b in batches]:
            run_cfg = dataclasses.replace(cfg, lanes=LanesConfig(strategy, batch))
            start = time.perf_counter()
            experiment.run(experiment.build(run_cfg))
            print(f"chain G={cfg.generations} seeds={cfg.seeds} {strategy.value}/{batch}: "
                  f"{time.perf_counter() - start:6.1f} s (compile included)")


if __name__ == "__main__":
    main()
