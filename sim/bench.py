"""Benchmarks: ``python -m sim.bench WORKLOAD [KEY=VALUE ...] [--json]``.

Workloads (``KEY=VALUE`` overrides replace the workload's own settings of the same key):

* ``lm``: a markov_lm chain of 3 trained generations, 4 lanes (``LM``);
* ``gaussian``: 10,000 Gaussian chains of 100 generations, under ``replace`` and under
  ``accumulate`` (one row each);
* ``sweep``: ``lm`` for one generation over 4 temperatures x 4 real fractions (``fresh``),
  as one vectorised job (``python -m sim -m``) and as 16 processes, one per point (one row
  each).

Every row reports the same fields (None where one does not apply): ``wall_s`` (the whole
run: compiling, planning, every generation), ``compile_s`` (wall seconds spent tracing,
lowering and XLA compiling, from JAX's monitoring events; programs compiled at once count
once), ``train_tokens_per_s`` and ``train_flops_per_s``
(the ``train_flops`` the LM world records, over the run's time outside compiling less the
sampling time), ``ceiling_flops_per_s`` (the best of several large float32 matmuls, timed
here on the same backend just before the workload and again just after it: a shared
host's speed drifts while a workload runs, and the better of the two is the conservative
ceiling), ``train_fraction_of_ceiling``, ``sample_tokens_per_s`` (a
generation's sampling, ``n_samples`` sequences per lane, timed alone and warm on the same
lanes), ``sample_flops_per_s`` (the ``sample_flops`` the run records for that generation,
over the same time: decoding with the key/value cache), ``peak_memory_bytes``,
``backend`` and ``steal_fraction`` (the share of the host's CPU time that its hypervisor
gave to other machines while the workload ran, from Linux's ``/proc/stat``: a shared cloud
host's noisy neighbours, which every wall-clock figure above includes). The persistent
compilation cache is off, so compiling is timed as a first run pays it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from hydra import compose, initialize_config_dir

from sim import experiment
from sim import grid as grids
from sim.chain import ChainState
from sim.cli import CONF_DIR
from sim.config import Config, register_configs, to_config
from sim.lanes import lane_keys, lane_program, peak_rss_bytes, resolve_strategy, shard
from sim.models import transformer as tf
from sim.worlds.lm import LMParams

ROOT = Path(__file__).resolve().parents[1]
COMMON = ("progress=false", "compile_cache=false")
LM = ("world=markov_lm", "world.vocab_size=64", "world.seq_len=64", "world.width=128",
      "world.layers=2", "world.heads=4", "world.n_samples=1024", "train.steps=200",
      "train.batch_size=64", "generations=2", "seeds=4", "mix=replace")
GAUSSIAN = ("world=gaussian", "world.dim=10", "world.n_samples=100", "generations=100",
            "seeds=10000")
FIELDS = ("workload", "backend", "wall_s", "compile_s", "train_tokens_per_s",
          "train_flops_per_s", "ceiling_flops_per_s", "train_fraction_of_ceiling",
          "sample_tokens_per_s", "sample_flops_per_s", "peak_memory_bytes",
          "steal_fraction")
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")

_compile_intervals: list[tuple[float, float]] = []  # (start, end) of every compile event


def _count_compile(event: str, duration: float, **_: Any) -> None:
    if event in COMPILE_EVENTS:
        end = time.perf_counter()
        _compile_intervals.append((end - duration, end))


def compile_seconds(since: float) -> float:
    """Wall seconds after ``since`` (a ``time.perf_counter()``) in which something was
    compiling: events that overlap (programs compiled at once in threads, or nested
    ones) count once."""
    total, reach = 0.0, since
    for start, end in sorted(_compile_intervals):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


jax.monitoring.register_event_duration_secs_listener(_count_compile)


def best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (which blocks until done)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_ceiling(sizes: tuple[int, ...] = (2048, 3072, 4096), repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` float32 n x n matmuls for each n in ``sizes``."""
    best = 0.0
    for n in sizes:
        a_NxN = jax.random.normal(jax.random.key(n), (n, n), jnp.float32)
        square = jax.jit(lambda x: x @ x)
        square(a_NxN).block_until_ready()
        seconds = best_seconds(lambda: square(a_NxN).block_until_ready(), repeats)
        best = max(best, 2 * n**3 / seconds)
    return best


def cpu_jiffies(stat: str | None = None) -> tuple[int, int] | None:
    """(stolen, total) CPU time of the host so far, in clock ticks, from the first line of
    ``/proc/stat`` (``stat``: its text); None where there is none (not Linux)."""
    try:
        stat = Path("/proc/stat").read_text() if stat is None else stat
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal (guest time is within user's)
    ticks = [int(v) for v in stat.split("\n", 1)[0].split()[1:9]]
    return ticks[7], sum(ticks)


def steal_fraction(before: tuple[int, int] | None, after: tuple[int, int] | None
                   ) -> float | None:
    """The share of the CPU time between two ``cpu_jiffies`` readings that was stolen."""
    if before is None or after is None or after[1] == before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def merged(workload: tuple[str, ...], overrides: list[str]) -> list[str]:
    """The workload's overrides with the user's replacing those of the same key."""
    key = lambda override: override.split("=", 1)[0]  # noqa: E731
    mine = {key(o) for o in overrides}
    return [o for o in workload if key(o) not in mine] + list(overrides)


SWEEP = tuple(merged(LM, ["generations=1", "mix=fresh", "sampling.temperature=0.5,0.8,1.0,1.2",
                          "mix.real_fraction=0,0.1,0.2,0.5"]))


def config(overrides: list[str]) -> Config:
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_config(compose("config", overrides=[*COMMON, *overrides]))


def result_row(workload: str, **fields: Any) -> dict[str, Any]:
    return {name: fields.get(name) for name in FIELDS} | {"workload": workload,
                                                          "backend": jax.default_backend()}


def run_timed(cfg: Config) -> tuple[experiment.Experiment, Any, float, float]:
    """(the built experiment, its Dataset, wall seconds, compile seconds) of one in-process
    run (building included)."""
    start = time.perf_counter()
    built = experiment.build(cfg)
    ds = experiment.run(built)
    return built, ds, time.perf_counter() - start, compile_seconds(since=start)


def sample_seconds(built: experiment.Experiment, repeats: int = 2) -> float:
    """Warm seconds of one generation's sampling (``n_samples`` sequences per lane from a
    freshly initialised model: the cost does not depend on the weights), on the run's
    lanes under the run's lane strategy, as the chain samples (``Chain.generate``)."""
    cfg, world = built.cfg, built.chain.world
    arch = world.teacher_arch
    keys_L = lane_keys(cfg.seed, cfg.seeds)
    dyn_L = grids.lane_settings(built.dyn, built.grid, cfg.seeds)
    weights_L = jax.vmap(tf.init, (0, None))(keys_L, arch)
    strategy, batch_size = resolve_strategy(cfg.lanes, world.cpu_lane_batch)
    generate = lane_program(
        lambda key, weights, dyn: built.chain.generate(
            key, ChainState(LMParams(weights, jnp.float32(0), arch), ()), dyn),
        cfg.seeds, "LLL", strategy, batch_size)
    inputs = shard((keys_L, weights_L, dyn_L), cfg.seeds)
    run = lambda: jax.block_until_ready(generate(*inputs))  # noqa: E731
    run()
    return best_seconds(run, repeats)


def bench_lm(overrides: list[str]) -> list[dict[str, Any]]:
    cfg = config(merged(LM, overrides))
    built, ds, wall, compiling = run_timed(cfg)
    world = built.chain.world
    sample_tokens = cfg.seeds * world.n_samples * world.seq_len  # per generation
    sampling = sample_seconds(built) if cfg.generations else None  # generation 0 samples none
    train_s = wall - compiling - cfg.generations * (sampling or 0.0)
    train_tokens = (cfg.generations + 1) * cfg.seeds * cfg.train.steps * cfg.train.batch_size \
        * world.seq_len
    train_flops = float(ds.train_flops.sum())
    return [result_row("lm", wall_s=wall, compile_s=compiling,
                 train_tokens_per_s=train_tokens / train_s,
                 train_flops_per_s=train_flops / train_s,
                 sample_tokens_per_s=None if sampling is None else sample_tokens / sampling,
                 sample_flops_per_s=None if sampling is None
                 else float(ds.sample_flops.sel(generation=1).sum()) / sampling,
                 peak_memory_bytes=int(ds.peak_memory_bytes.max()))]


def bench_gaussian(overrides: list[str]) -> list[dict[str, Any]]:
    rows = []
    for mix in ("replace", "accumulate"):
        _, ds, wall, compiling = run_timed(config(merged(GAUSSIAN, [f"mix={mix}",
                                                                   *overrides])))
        rows.append(result_row(f"gaussian mix={mix}", wall_s=wall, compile_s=compiling,
                         peak_memory_bytes=int(ds.peak_memory_bytes.max())))
    return rows


def points(overrides: list[str]) -> list[list[str]]:
    """One override list per point of the traced sweeps (the others kept as given)."""
    fixed, traced = [], []
    for override in overrides:
        key, _, value = override.partition("=")
        if key in grids.TRACED_KEYS and "," in value:
            traced.append([f"{key}={v}" for v in value.split(",")])
        else:
            fixed.append(override)
    return [fixed + list(point) for point in itertools.product(*traced)]


def process_seconds(args: list[str], cwd: str) -> float:
    """Wall seconds of ``python -m sim ARGS`` in a process of its own."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sim", *args, *COMMON], cwd=cwd,
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        sys.exit(f"python -m sim {' '.join(args)} failed:\n{out.stderr}")
    return time.perf_counter() - start


def bench_sweep(overrides: list[str]) -> list[dict[str, Any]]:
    """The sweep as one vectorised job, then as one process per point (each in a fresh
    directory); peak memory is the largest process's resident peak so far."""
    sweep = merged(SWEEP, overrides)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wall = process_seconds(["-m", *sweep], tmp)
        rows.append(result_row("sweep vectorised", wall_s=wall,
                         peak_memory_bytes=peak_rss_bytes(resource.RUSAGE_CHILDREN)))
        separate = points(sweep)
        wall = sum(process_seconds(point, tmp) for point in separate)
        rows.append(result_row(f"sweep {len(separate)} processes", wall_s=wall,
                         peak_memory_bytes=peak_rss_bytes(resource.RUSAGE_CHILDREN)))
    return rows


def against_ceiling(row: dict[str, Any], ceiling: float) -> dict[str, Any]:
    """``row`` with the matmul ceiling and, where it has a training rate, the fraction of
    the ceiling that rate reaches."""
    flops = row["train_flops_per_s"]
    return row | {"ceiling_flops_per_s": ceiling,
                  "train_fraction_of_ceiling": None if flops is None else flops / ceiling}


WORKLOADS = {"lm": bench_lm, "gaussian": bench_gaussian, "sweep": bench_sweep}


def _cell(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sim.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE, as for python -m sim")
    parser.add_argument("--json", action="store_true", help="one JSON line per row")
    args = parser.parse_args(argv)
    ceiling_before = matmul_ceiling()
    before = cpu_jiffies()
    rows = WORKLOADS[args.workload](args.overrides)
    stolen = steal_fraction(before, cpu_jiffies())
    ceiling = max(ceiling_before, matmul_ceiling())
    rows = [against_ceiling(row, ceiling) | {"steal_fraction": stolen} for row in rows]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    for name in FIELDS:  # one column per row
        print(f"{name:26s}" + "".join(f"{_cell(row[name]):>24s}" for row in rows))


if __name__ == "__main__":
    main()
