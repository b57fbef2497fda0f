"""Small synthetic results Datasets and run directories for the analysis tests (no tests
here; the simulator never runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

CONFIG = """world:
  vocab_size: 8
  zipf_exponent: 1.0
  trait_trigger: []
mix:
  policy: replace
generations: 4
seeds: 6
"""
VOCAB = 8


def synthetic(generations: int = 4, seeds: int = 6,
              swept: dict[str, list] | None = None, seed: int = 0) -> xr.Dataset:
    """A Dataset shaped like ``python -m sim`` output: dims generation, seed, own dims
    ``n`` and ``rank``, and ``swept`` dims (default: ``mix`` of 2 values, a length-1
    ``distill``, ``sampling.temperature`` of 3 values). ``loss`` grows with the generation
    and the swept values' indices; ``rank_frequency`` is Zipf at generation 0 and loses its
    tail later."""
    swept = {"mix": ["accumulate", "replace"], "distill": ["hard"],
             "sampling.temperature": [0.5, 0.8, 1.0]} if swept is None else swept
    rng = np.random.default_rng(seed)
    shape = [len(v) for v in swept.values()]
    g = np.arange(generations + 1)
    offset = sum(np.indices(shape)[i] * (i + 1) for i in range(len(shape))) if shape else 0
    tail = (None,) * len(shape)  # the swept axes, for broadcasting
    noise = rng.normal(0.0, 0.1, (generations + 1, seeds, *shape))
    loss = (g[:, None] * 0.5)[(...,) + tail] * (1 + np.asarray(offset)) + noise
    zipf = 1.0 / np.arange(1, VOCAB + 1)
    zipf = zipf / zipf.sum()
    decay = np.exp(-g[:, None] * np.arange(VOCAB)[None] / 8)  # G x R
    rank_frequency = zipf * decay
    rank_frequency = rank_frequency / rank_frequency.sum(-1, keepdims=True)
    rank_frequency = np.broadcast_to(rank_frequency[(slice(None), None, slice(None)) + tail],
                                     (generations + 1, seeds, VOCAB, *shape))
    distinct = np.clip(0.2 * np.arange(1, 5)[(None, None, slice(None)) + tail]
                       - 0.01 * g[(slice(None), None, None) + tail]
                       + rng.normal(0, 0.01, (generations + 1, seeds, 4, *shape)), 0, 1)
    trait = np.clip(0.6 + 0.05 * g[(slice(None), None) + tail]
                    + rng.normal(0, 0.02, (generations + 1, seeds, *shape)), 0, 1)
    trait[0] = np.clip(trait[0], 0, 1)
    retention = np.exp(-loss + loss[:1])
    cost = np.where(g[(slice(None), None) + tail] > 0,
                    0.3 * np.asarray(offset)
                    + rng.normal(0, 0.01, (generations + 1, seeds, *shape)),
                    0.0)
    sweep_dims = tuple(swept)
    ds = xr.Dataset(
        {"loss": (("generation", "seed", *sweep_dims), loss,
                  {"long_name": "synthetic loss", "units": "nats", "description": "a loss"}),
         "rank_frequency": (("generation", "seed", "rank", *sweep_dims), rank_frequency,
                            {"long_name": "token frequency by true rank"}),
         "distinct_n": (("generation", "seed", "n", *sweep_dims), distinct,
                        {"long_name": "distinct n-grams"}),
         "trait_rate": (("generation", "seed", *sweep_dims), trait,
                        {"long_name": "rate of the planted trait"}),
         "retention": (("generation", "seed", *sweep_dims), retention,
                       {"long_name": "quality retained"}),
         "cost_reduction": (("generation", "seed", *sweep_dims), cost,
                            {"long_name": "training cost saved"}),
         "params": (("generation", "seed", *sweep_dims),
                    np.full((generations + 1, seeds, *shape), 100.0),
                    {"long_name": "parameter count"})},
        coords={"generation": g, "seed": np.arange(seeds), "rank": np.arange(1, VOCAB + 1),
                "n": np.arange(1, 5), **{k: v for k, v in swept.items()}},
        attrs={"config": CONFIG, "versions": "synthetic==0", "git_commit": "abc123",
               "backend": "cpu", "device_kind": "cpu", "device_count": 1,
               "wall_time_s": 1.5, "created": "2026-01-01T00:00:00+0000"})
    ds["generation"].attrs["long_name"] = "generation (0 = fitted on real data)"
    return ds


def write_sweep(directory: Path, ds: xr.Dataset, dim: str) -> list[Path]:
    """``ds`` split along ``dim`` into Hydra job directories ``directory/<i>/`` (each with
    ``.hydra/`` and a results.nc holding ``dim`` as a length-1 dim), as a multirun writes."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "multirun.yaml").write_text("hydra: {}\n")
    jobs = []
    for i in range(ds.sizes[dim]):
        job = directory / str(i)
        (job / ".hydra").mkdir(parents=True)
        ds.isel({dim: [i]}).to_netcdf(job / "results.nc", engine="h5netcdf")
        jobs.append(job)
    return jobs
