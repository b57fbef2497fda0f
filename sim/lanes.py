"""Lanes: many independent chains (seeds x vectorised settings) in one compiled program.

Each lane has its own key and its own dynamic settings. Lanes run under ``vmap`` (one wide
batch: what fills a GPU) or ``lax.map`` over batches of ``batch_size`` vmapped lanes (less
memory traffic on a small CPU). With several local devices the lanes are sharded across
them along a ``lanes`` mesh axis. Generations run one compiled call each, so long chains
show progress and every generation is a natural checkpoint boundary.
"""

from __future__ import annotations

import enum
import functools
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from sim.chain import Chain
from sim.errors import require
from sim.worlds.base import Array


DEFAULT_BATCH = 64  # lanes per batch for strategy=map when neither config nor world says


class Strategy(str, enum.Enum):
    auto = "auto"  # vmap, except lax.map batches on one CPU where the world measured faster
    vmap = "vmap"
    map = "map"


@dataclass(frozen=True)
class LanesConfig:
    strategy: Strategy = Strategy.auto
    batch_size: Optional[int] = None  # lanes per vmapped batch under map (None: the world's)


def lane_keys(seed: int, lanes: int) -> Array:
    """Lane i's key is fold_in(key(seed), i): independent of how many lanes run."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(lanes))


def resolve_strategy(cfg: LanesConfig, cpu_lane_batch: int = 0) -> tuple[Strategy, int]:
    """The strategy and lanes per batch: ``auto`` follows the world's CPU measurement."""
    require(cfg.batch_size is None or cfg.batch_size >= 1, "lanes.batch_size", cfg.batch_size,
            "an integer >= 1, or null (the world's measured choice)")
    batch_size = cfg.batch_size or cpu_lane_batch or DEFAULT_BATCH
    if cfg.strategy is not Strategy.auto:
        return cfg.strategy, batch_size
    single_cpu = jax.default_backend() == "cpu" and jax.local_device_count() == 1
    return (Strategy.map if single_cpu and cpu_lane_batch else Strategy.vmap), batch_size


def _over_lanes(fn: Callable[[Any], Any], strategy: Strategy, batch_size: int,
                lanes: int) -> Callable[[Any], Any]:
    if strategy is Strategy.vmap or batch_size >= lanes:
        return jax.vmap(fn)
    return lambda xs: jax.lax.map(fn, xs, batch_size=batch_size)


def _shard(tree: Any, lanes: int) -> Any:
    """Place the lane axis across all local devices when it divides evenly."""
    devices = jax.local_devices()
    if len(devices) == 1 or lanes % len(devices):
        return tree
    sharding = NamedSharding(Mesh(np.array(devices), ("lanes",)), PartitionSpec("lanes"))
    return jax.device_put(tree, sharding)


def run_lanes(chain: Chain, keys_S: Array, dyn_S: dict[str, Array], generations: int,
              cfg: LanesConfig, progress: bool = True) -> dict[str, np.ndarray]:
    """Run every lane for ``generations`` generations; metrics as arrays (G + 1, lanes)."""
    lanes = keys_S.shape[0]
    strategy, batch_size = resolve_strategy(cfg, chain.world.cpu_lane_batch)
    keys_S, dyn_S = _shard((keys_S, dyn_S), lanes)

    @jax.jit
    def start(keys_S: Array, dyn_S: dict[str, Array]):
        return _over_lanes(lambda a: chain.start(*a), strategy, batch_size, lanes)(
            (keys_S, dyn_S))

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state_S: Any, generation: Array, keys_S: Array, dyn_S: dict[str, Array]):
        return _over_lanes(lambda a: chain.step(a[0], generation, a[1], a[2]),
                           strategy, batch_size, lanes)((state_S, keys_S, dyn_S))

    state_S, metrics = start(keys_S, dyn_S)
    history = [jax.device_get(metrics)]
    with warnings.catch_warnings():
        # A student whose shapes differ from the generation-0 teacher cannot reuse its buffers.
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        for g in tqdm(range(1, generations + 1), desc="generations", unit="gen",
                      disable=not progress or generations == 0, leave=False):
            state_S, metrics = step(state_S, jnp.asarray(g), keys_S, dyn_S)
            history.append(jax.device_get(metrics))
    return {name: np.stack([h[name] for h in history]) for name in history[0]}
