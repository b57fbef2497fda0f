"""Lanes: many independent chains (seeds x vectorised settings) in one compiled program.

Each lane has its own key and its own dynamic settings. Lanes run under ``vmap`` (one wide
batch: what fills a GPU) or ``lax.map`` over batches of ``batch_size`` vmapped lanes (less
memory traffic on a small CPU). With several local devices, each runs its share of the
lanes (``jax.shard_map`` along a ``lanes`` mesh axis); on the CPU, ``sim`` makes one device
per core, so that each core trains its own lanes. Generations run one compiled call each,
so long chains show progress and every generation is a checkpoint boundary: ``run_lanes``
offers a snapshot of its progress after each one (``sim.checkpoint``) and resumes from one.

Lanes that do not fit in memory at once run in chunks of one compiled size (the last chunk
padded), each chunk's whole chain before the next: ``lanes.chunk_size``, or by default the
most lanes whose generation step XLA says fits in ``lanes.memory_fraction`` of the free
device memory (host memory on CPU).
"""

from __future__ import annotations

import concurrent.futures
import enum
import functools
import os
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from sim import checkpoint
from sim.chain import Chain, ChainState
from sim.errors import require
from sim.worlds.base import Array


DEFAULT_BATCH = 64  # lanes per batch for strategy=map when neither config nor world says


class Strategy(str, enum.Enum):
    auto = "auto"  # vmap, except lax.map batches on the CPU where the world measured faster
    vmap = "vmap"
    map = "map"


@dataclass(frozen=True)
class LanesConfig:
    strategy: Strategy = Strategy.auto  # auto also fits lane by lane where the world asks
    batch_size: Optional[int] = None  # lanes per vmapped batch under map (None: the world's)
    chunk_size: Optional[int] = None  # lanes per compiled call (None: as many as memory allows)
    memory_fraction: float = 0.5  # share of free device memory an automatic chunk may use


def lane_keys(seed: int, lanes: int | np.ndarray) -> Array:
    """Lane i's key is fold_in(key(seed), i): independent of how many lanes run.
    ``lanes`` is a number of lanes (0..lanes-1) or the lane indices themselves."""
    base = jax.random.key(seed)
    indices = np.arange(lanes) if np.ndim(lanes) == 0 else np.asarray(lanes)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.int32))


def _on_cpu() -> bool:
    """Whether this process computes on the CPU (each of its CPU devices runs its own
    lanes, ``lane_mesh``)."""
    return jax.default_backend() == "cpu"


def resolve_strategy(cfg: LanesConfig, cpu_lane_batch: int = 0) -> tuple[Strategy, int]:
    """The strategy and lanes per batch: ``auto`` follows the world's CPU measurement."""
    require(cfg.batch_size is None or cfg.batch_size >= 1, "lanes.batch_size", cfg.batch_size,
            "an integer >= 1, or null (the world's measured choice)")
    require(cfg.chunk_size is None or cfg.chunk_size >= 1, "lanes.chunk_size", cfg.chunk_size,
            "an integer >= 1, or null (as many lanes as device memory allows)")
    require(0 < cfg.memory_fraction <= 1, "lanes.memory_fraction", cfg.memory_fraction,
            "a float in (0, 1]")
    batch_size = cfg.batch_size or cpu_lane_batch or DEFAULT_BATCH
    if cfg.strategy is not Strategy.auto:
        return cfg.strategy, batch_size
    return (Strategy.map if _on_cpu() and cpu_lane_batch else Strategy.vmap), batch_size


def lane_by_lane(cfg: LanesConfig, world: Any) -> bool:
    """Whether the chain samples, fits and measures lane by lane inside its vmapped lanes:
    under ``auto`` on the CPU (each CPU device its own lanes), for worlds that measured it
    faster (``cpu_lane_by_lane``: a transformer's training, sampling and held-out forward
    passes one lane at a time)."""
    return (cfg.strategy is Strategy.auto and _on_cpu()
            and getattr(world, "cpu_lane_by_lane", False))


def over_lanes(fn: Callable[[Any], Any], strategy: Strategy, batch_size: int,
               lanes: int) -> Callable[[Any], Any]:
    """``fn`` of one lane's inputs, mapped over a leading axis of ``lanes`` lanes."""
    if strategy is Strategy.vmap or batch_size >= lanes:
        return jax.vmap(fn)
    return lambda xs: jax.lax.map(fn, xs, batch_size=batch_size)


def mesh_size(lanes: int) -> int:
    """How many local devices ``lanes`` lanes split across: the most that divide them evenly."""
    return max(d for d in range(1, jax.local_device_count() + 1) if lanes % d == 0)


def lane_mesh(lanes: int) -> Mesh | None:
    """The local devices the lanes split across, each running its share of them
    (``mesh_size``; None: one device runs them all). On the CPU, ``sim`` makes one device
    per core (``sim/__init__.py``)."""
    count = mesh_size(lanes)
    return None if count == 1 else Mesh(np.array(jax.local_devices()[:count]), ("lanes",))


def lane_program(fn: Callable[..., Any], lanes: int, lane_args: str, strategy: Strategy,
                 batch_size: int, **jit: Any) -> Callable[..., Any]:
    """``fn`` of one lane, compiled for ``lanes`` lanes: ``lane_args`` marks each of its
    arguments as lane-batched ("L") or shared by every lane ("-"); every output is
    lane-batched. Each of ``lane_mesh``'s devices runs its own lanes (``jax.shard_map``;
    the lanes are independent, so no device waits for another), mapped with
    ``over_lanes``. ``jit``: options for ``jax.jit``."""
    mesh = lane_mesh(lanes)
    per_device = lanes if mesh is None else lanes // mesh.size

    def batched(*args: Any) -> Any:
        def one(lane_values: tuple[Any, ...]) -> Any:
            values = iter(lane_values)
            return fn(*(next(values) if a == "L" else arg for a, arg in zip(lane_args, args)))

        return over_lanes(one, strategy, batch_size, per_device)(
            tuple(arg for a, arg in zip(lane_args, args) if a == "L"))

    if mesh is not None:
        batched = jax.shard_map(batched, mesh=mesh, check_vma=False,
                                out_specs=PartitionSpec("lanes"),
                                in_specs=tuple(PartitionSpec("lanes") if a == "L"
                                               else PartitionSpec() for a in lane_args))
    return jax.jit(batched, **jit)


def _lane_sharding(lanes: int) -> NamedSharding | None:
    """The lane axis split across ``lane_mesh``'s devices."""
    mesh = lane_mesh(lanes)
    return None if mesh is None else NamedSharding(mesh, PartitionSpec("lanes"))


def shard(tree: Any, lanes: int) -> Any:
    """Place the lane axis across ``lane_mesh``'s devices."""
    sharding = _lane_sharding(lanes)
    return tree if sharding is None else jax.device_put(tree, sharding)


def free_memory_bytes(device: jax.Device) -> int:
    """Memory the device can still allocate: the allocator's limit on accelerators, the
    host's available memory on CPU."""
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def peak_bytes(compiled: jax.stages.Compiled) -> int | None:
    """Arguments, outputs and temporaries of a compiled call (None where XLA cannot say)."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return (stats.argument_size_in_bytes + stats.output_size_in_bytes
            + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def _round_to(lanes: int, multiple: int) -> int:
    return max(multiple, lanes - lanes % multiple) if lanes >= multiple else lanes


def _placed(tree: Any, sharding: NamedSharding | None) -> Any:
    """Shapes and dtypes of a tree of lane-batched arrays, placed as ``shard`` places them."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding,
                                                       weak_type=x.weak_type), tree)


class _Programs:
    """The compiled programs of a chain for chunks of ``chunk`` lanes: ``start``, ``step``
    and ``measure``, where ``start`` and ``step`` are each the lesson's program (``begin``,
    ``produce``) followed by one ``learn`` program they share when the chain
    ``shares_fit``."""

    def __init__(self, chain: Chain, strategy: Strategy, batch_size: int, chunk: int):
        self.chunk = chunk
        self.shares_fit = chain.shares_fit
        program = functools.partial(lane_program, lanes=chunk, strategy=strategy,
                                    batch_size=batch_size)
        if self.shares_fit:
            self.begin = program(chain.begin, lane_args="LL")
            self.produce = program(chain.produce, lane_args="L-LL")
            self.learn = program(chain.learn, lane_args="L-LL")
        else:
            self._start = program(chain.start, lane_args="LL")
            self._step = program(chain.step, lane_args="L-LL", donate_argnums=0)
        self.measure = program(chain.measure, lane_args="L-LLL")

    def start(self, keys_S: Array, dyn_S: dict[str, Array]) -> tuple[ChainState, dict]:
        """``Chain.start`` over the chunk's lanes."""
        if not self.shares_fit:
            return self._start(keys_S, dyn_S)
        lesson_S, pool_S, metrics = self.begin(keys_S, dyn_S)
        return ChainState(self.learn(keys_S, np.int32(0), lesson_S, dyn_S), pool_S), metrics

    def step(self, state_S: ChainState, g: Array, keys_S: Array, dyn_S: dict[str, Array]
             ) -> tuple[ChainState, Any, dict]:
        """``Chain.step`` over the chunk's lanes (``state_S`` may be consumed)."""
        if not self.shares_fit:
            return self._step(state_S, g, keys_S, dyn_S)
        lesson_S, pool_S, produced = self.produce(state_S, g, keys_S, dyn_S)
        return (ChainState(self.learn(keys_S, g, lesson_S, dyn_S), pool_S), lesson_S.teacher,
                produced)

    def _lowered(self, keys_S: Array, dyn_S: dict[str, Array], generations: int
                 ) -> Iterator[jax.stages.Lowered]:
        """Every program the chain will call, lowered for the shapes it will be called
        with (``step`` and ``produce`` only with later generations), ``measure`` (the
        longest to compile) first."""
        sharding = _lane_sharding(self.chunk)
        generation = jax.ShapeDtypeStruct((), jnp.int32)
        state_S = _placed(jax.eval_shape(self.start, keys_S, dyn_S)[0], sharding)
        yield self.measure.lower(keys_S, generation, state_S.params, state_S.params, dyn_S)
        if not self.shares_fit:
            yield self._start.lower(keys_S, dyn_S)
            if generations:
                yield self._step.lower(state_S, generation, keys_S, dyn_S)
            return
        # every generation's lesson has generation 0's shapes (``Chain.shares_fit``)
        lesson_S = _placed(jax.eval_shape(self.begin, keys_S, dyn_S)[0], sharding)
        yield self.begin.lower(keys_S, dyn_S)
        yield self.learn.lower(keys_S, generation, lesson_S, dyn_S)
        if generations:
            yield self.produce.lower(state_S, generation, keys_S, dyn_S)

    def compile(self, keys_S: Array, dyn_S: dict[str, Array], generations: int) -> int | None:
        """Compile every program for a chunk, as the chain will call them, so that jit
        reuses the results: each XLA compilation starts as soon as its program is lowered
        and runs outside the GIL, beside the lowering of the next and the other
        compilations. The peak memory per device of the largest program."""
        with concurrent.futures.ThreadPoolExecutor(4) as threads:  # at most 4 programs
            compiling = [threads.submit(program.compile)
                         for program in self._lowered(keys_S, dyn_S, generations)]
            peaks = [peak_bytes(c.result()) for c in compiling]
        return None if None in peaks else max(peaks)


def _chunk_inputs(keys_L: Array, dyn_L: dict[str, Array], lanes: slice,
                  chunk: int) -> tuple[Array, dict[str, Array]]:
    """Lanes ``lanes`` padded to ``chunk`` with copies of the last (dropped afterwards)."""
    index = np.minimum(np.arange(lanes.start, lanes.start + chunk), lanes.stop - 1)
    keys_S = jax.random.wrap_key_data(np.asarray(jax.random.key_data(keys_L))[index])
    return shard((keys_S, {k: np.asarray(v)[index] for k, v in dyn_L.items()}), chunk)


def plan_chunk(chain: Chain, keys_L: Array, dyn_L: dict[str, Array], cfg: LanesConfig,
               strategy: Strategy, batch_size: int, generations: int = 1) -> _Programs:
    """The programs for the largest chunk of lanes whose generation step (generation 0's
    fit, when there are no later generations) fits in ``cfg.memory_fraction`` of the free
    memory (or ``cfg.chunk_size`` lanes)."""
    lanes = keys_L.shape[0]
    devices = jax.local_device_count()
    if cfg.chunk_size is not None:
        programs = _Programs(chain, strategy, batch_size, min(cfg.chunk_size, lanes))
        programs.compile(*_chunk_inputs(keys_L, dyn_L, slice(0, lanes), programs.chunk),
                         generations)
        return programs
    budget = cfg.memory_fraction * free_memory_bytes(jax.local_devices()[0])  # per device
    if _on_cpu():  # CPU devices share the host's memory
        budget /= devices
    chunk = lanes
    while True:
        programs = _Programs(chain, strategy, batch_size, chunk)
        peak = programs.compile(*_chunk_inputs(keys_L, dyn_L, slice(0, lanes), chunk),
                                generations)
        if peak is None or peak <= budget or chunk <= devices:
            return programs
        chunk = _round_to(max(1, min(chunk - 1, int(chunk * budget / peak))), devices)


def _finish(metrics_S: dict[str, Array], host: Mapping[str, Callable[[Any], Any]]
            ) -> dict[str, np.ndarray]:
    """One generation's metrics on the host, with the world's host metrics finished lane
    by lane."""
    metrics_S = jax.device_get(metrics_S)
    for name, fn in host.items():
        metrics_S[name] = np.stack([fn(lane) for lane in metrics_S[name]])
    return metrics_S


def peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """The peak resident memory of this process (or, with RUSAGE_CHILDREN, of its largest
    finished child)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, else KiB


def high_water_bytes(device: jax.Device) -> int:
    """The most memory allocated so far: the device allocator's peak on accelerators, the
    process's peak resident memory on CPU."""
    stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return peak_rss_bytes()


class Costs(NamedTuple):
    """What each generation cost, over all chunks: wall seconds (compiling included:
    generation 0's holds the compiling of every program, done at once before it runs) and
    the memory high-water mark at its end (``high_water_bytes``), shape (G + 1,)."""

    wall_time_s: np.ndarray
    peak_memory_bytes: np.ndarray


def _run_chunk(programs: _Programs, keys_S: Array, dyn_S: dict[str, Array],
               generations: int, finish: Callable[[Any], dict[str, np.ndarray]],
               bar: tqdm, costs: Costs, resumed: tuple[Any, list[dict]] | None = None,
               save: Callable[[int, Any, list[dict]], None] | None = None
               ) -> dict[str, np.ndarray]:
    """One chunk's chains, generation by generation: metrics (G + 1, chunk, ...); adds each
    generation's wall time and memory high-water mark to ``costs``. ``resumed``: the state
    after, and the metrics of, the generations already run; ``save(g, state, history)``
    runs after each generation."""
    device = jax.local_devices()[0]
    state_S, history = resumed or (None, [])
    bar.update(len(history))
    for g in range(len(history), generations + 1):
        start = time.perf_counter()
        if g == 0:
            state_S, produced = programs.start(keys_S, dyn_S)
            teacher_S = state_S.params  # generation 0 is measured against itself
        else:
            state_S, teacher_S, produced = programs.step(state_S, np.int32(g), keys_S, dyn_S)
        metrics = programs.measure(keys_S, np.int32(g), state_S.params, teacher_S, dyn_S)
        history.append(finish({**metrics, **produced}))  # waits for the generation to finish
        costs.wall_time_s[g] += time.perf_counter() - start
        costs.peak_memory_bytes[g] = max(costs.peak_memory_bytes[g], high_water_bytes(device))
        if save is not None:
            save(g, state_S, history)
        bar.update()
    return _stack(history)


def _stack(history: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.stack([h[name] for h in history]) for name in history[0]}


def _state_template(programs: _Programs, keys_S: Array, dyn_S: dict[str, Array],
                    generation: int) -> Any:
    """Shapes and dtypes of a chunk's chain state after ``generation``."""
    state_S = jax.eval_shape(programs.start, keys_S, dyn_S)[0]
    if generation >= 1:  # a student of another size than generation 0 changes the shapes
        g = jax.ShapeDtypeStruct((), jnp.int32)
        state_S = jax.eval_shape(programs.step, state_S, g, keys_S, dyn_S)[0]
    return state_S


def _resume_chunk(programs: _Programs, keys_S: Array, dyn_S: dict[str, Array],
                  snapshot: checkpoint.Snapshot) -> tuple[Any, list[dict]]:
    """The chunk in progress of a checkpoint: its state on the devices and its metrics."""
    template = _state_template(programs, keys_S, dyn_S, snapshot.generation)
    state_S = shard(checkpoint.from_host(snapshot.state, template), programs.chunk)
    history = [{name: values[g] for name, values in snapshot.history.items()}
               for g in range(snapshot.generation + 1)]
    return state_S, history


def run_lanes(chain: Chain, keys_L: Array, dyn_L: dict[str, Array], generations: int,
              cfg: LanesConfig, progress: bool = True,
              resume: checkpoint.Snapshot | None = None,
              save: Callable[[Callable[[], checkpoint.Snapshot]], None] | None = None
              ) -> tuple[dict[str, np.ndarray], Costs, int]:
    """Run every lane for ``generations`` generations, in chunks of lanes that fit in
    memory (padded to one compiled size): metrics as arrays (G + 1, lanes, ...), what
    each generation cost, and how many devices each chunk's lanes split across.
    ``resume`` continues from a checkpoint's snapshot (in its chunk size); after every
    generation ``save`` is offered a function that makes the snapshot (which it calls when
    it means to save it)."""
    lanes = keys_L.shape[0]
    strategy, batch_size = resolve_strategy(cfg, chain.world.cpu_lane_batch)
    finish = functools.partial(_finish, host=getattr(chain.world, "host_metrics", {}))
    costs = Costs(np.zeros(generations + 1), np.zeros(generations + 1, np.int64))
    chunks, first_chunk = [], 0  # metrics of the finished chunks; the chunk to run first
    if resume is not None:
        checkpoint.check_metrics(resume, chain.metric_info)
        costs.wall_time_s[:] = resume.wall_time_s
        costs.peak_memory_bytes[:] = resume.peak_memory_bytes
        chunks, first_chunk = [resume.done] if resume.done else [], resume.chunk
    with warnings.catch_warnings():
        # A student whose shapes differ from the generation-0 teacher cannot reuse its buffers.
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        planning = time.perf_counter()
        if resume is not None:  # in the checkpoint's chunk size (compiles nothing yet)
            programs = _Programs(chain, strategy, batch_size, resume.chunk_size)
        else:
            programs = plan_chunk(chain, keys_L, dyn_L, cfg, strategy, batch_size, generations)
            costs.wall_time_s[0] += time.perf_counter() - planning  # compiles every program
        chunk = programs.chunk
        starts = range(0, lanes, chunk)
        with tqdm(total=len(starts) * (generations + 1), unit="gen", leave=False,
                  desc=f"{lanes} lanes" + (f" in chunks of {chunk}" if chunk < lanes else ""),
                  disable=not progress or (generations == 0 and len(starts) == 1)) as bar:
            bar.update(first_chunk * (generations + 1))
            for index in range(first_chunk, len(starts)):
                used = slice(starts[index], min(starts[index] + chunk, lanes))
                keys_S, dyn_S = _chunk_inputs(keys_L, dyn_L, used, chunk)
                resumed = None
                if resume is not None and index == resume.chunk:
                    resumed = _resume_chunk(programs, keys_S, dyn_S, resume)
                saver = None
                if save is not None:
                    saver = functools.partial(_offer, save, chunks, index, chunk, costs)
                metrics = _run_chunk(programs, keys_S, dyn_S, generations, finish, bar, costs,
                                     resumed, saver)
                chunks.append({name: values[:, :used.stop - used.start]
                               for name, values in metrics.items()})
    return _concatenate(chunks), costs, mesh_size(chunk)


def _concatenate(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Metrics of chunks of lanes, (G + 1, lanes, ...) each, along the lanes."""
    if not chunks:
        return {}
    return {name: np.concatenate([c[name] for c in chunks], axis=1) for name in chunks[0]}


def _offer(save: Callable[[Callable[[], checkpoint.Snapshot]], None],
           chunks: list[dict[str, np.ndarray]], index: int, chunk: int, costs: Costs,
           g: int, state_S: Any, history: list[dict[str, np.ndarray]]) -> None:
    """Offer ``save`` the snapshot after generation ``g`` of chunk ``index``."""
    save(lambda: checkpoint.Snapshot(
        chunk, index, g, checkpoint.to_host(state_S), _stack(history), _concatenate(chunks),
        costs.wall_time_s.copy(), costs.peak_memory_bytes.copy()))
