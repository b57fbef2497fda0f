"""Checkpoints: a run's progress after a finished generation, so that an interrupted run
resumes where it stopped and ends with the same ``results.nc`` as an uninterrupted one.

A checkpoint is one NumPy ``.npz`` file in ``<run dir>/checkpoint/``, replaced atomically
(written beside it, fsynced, renamed into place) after the first generation to finish
``checkpoint.interval_s`` seconds after the last checkpoint (after every generation with 0:
a chain of closed-form fits makes hundreds of generations a second, more than are worth
writing), so an interruption costs at most that much work. It holds the resolved config it
was made with, the chunk of lanes in progress and its last finished generation, that
chunk's chain state (its flattened leaves on the host, typed PRNG keys as their key data,
the tree structure checked against the program's on restore), the metrics of the finished
chunks and of the chunk in progress, and what each generation cost so far. Keys derive
from ``fold_in(key, generation)`` (``sim.chain``), so a chain continued from its state
makes the numbers it would have made without stopping. (One small file replaced whole
suits states of a few MB written synchronously between generations; Orbax's directory per
step and background threads would add more than they save here.)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import yaml

from sim.errors import ConfigError, require
from sim.files import replacing, signals_deferred

DIRECTORY = "checkpoint"
FILE = "state.npz"
# Config keys that do not change a run's numbers: a resume may change them.
IGNORED_KEYS = ("progress", "compile_cache", "compile_cache_dir", "lanes.memory_fraction",
                "checkpoint")


@dataclass(frozen=True)
class CheckpointConfig:
    enabled: bool = True  # checkpoint finished generations in the run directory
    interval_s: float = 1.0  # at least this long between checkpoints (0: every generation)
    keep: bool = False  # keep the checkpoint once results.nc is written


def validate(cfg: CheckpointConfig) -> None:
    require(cfg.interval_s >= 0, "checkpoint.interval_s", cfg.interval_s,
            "a number of seconds >= 0 (0: a checkpoint after every generation)")


class HostTree(NamedTuple):
    """A pytree's leaves as host arrays, typed PRNG keys as their key data."""

    leaves: list[np.ndarray]
    treedef: str  # str(treedef): checked against the program's state on restore
    key_impls: list[str]  # per leaf: the PRNG implementation of a key leaf, else ""


class Snapshot(NamedTuple):
    """Where a run of lanes stands after a finished generation of one chunk of lanes."""

    chunk_size: int  # lanes per compiled call (a resume keeps it)
    chunk: int  # index of the chunk in progress
    generation: int  # the chunk's last finished generation
    state: HostTree  # the chunk's ChainState after that generation
    history: dict[str, np.ndarray]  # the chunk's metrics, (generation + 1, chunk_size, ...)
    done: dict[str, np.ndarray]  # metrics of the finished chunks, (G + 1, lanes so far, ...)
    wall_time_s: np.ndarray  # costs so far, (G + 1,)
    peak_memory_bytes: np.ndarray


def to_host(tree: Any) -> HostTree:
    """Copy a pytree of (device) arrays to the host."""
    import jax

    leaves, treedef = jax.tree.flatten(tree)
    host, impls = [], []
    for leaf in leaves:
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            impls.append(str(jax.random.key_impl(leaf)))
            leaf = jax.random.key_data(leaf)
        else:
            impls.append("")
        host.append(np.array(leaf))  # a copy: the device buffer is donated to the next step
    return HostTree(host, str(treedef), impls)


def from_host(host: HostTree, template: Any) -> Any:
    """The pytree of ``template`` (arrays or ShapeDtypeStructs) with the saved leaves;
    raises ConfigError where the saved state does not fit the program."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree.flatten(template)
    fits = str(treedef) == host.treedef and len(leaves) == len(host.leaves)
    restored = []
    for leaf, saved, impl in zip(leaves, host.leaves, host.key_impls):
        if impl:
            saved = jax.random.wrap_key_data(saved, impl=impl)
        fits = fits and saved.shape == leaf.shape and saved.dtype == leaf.dtype
        if getattr(leaf, "weak_type", False) and not impl:
            # weakly typed as the program made it (it changes type promotion in the step);
            # no world's state has such leaves today, and JAX has no public way to make one
            from jax._src.lax.lax import _convert_element_type

            restored.append(_convert_element_type(saved, np.dtype(leaf.dtype), weak_type=True))
        else:
            restored.append(jnp.asarray(saved))
    if not fits:
        raise ConfigError("the checkpoint's chain state does not fit this program (made by "
                          "other code?): start a new run (a new hydra.run.dir)")
    return jax.tree.unflatten(treedef, restored)


def check_metrics(snapshot: Snapshot, names: Iterable[str]) -> None:
    """Raise ConfigError unless the snapshot records exactly the metrics ``names`` (a
    checkpoint made by another version of sim may record others)."""
    names = set(names)
    for recorded in (snapshot.history, snapshot.done):
        if recorded and set(recorded) != names:
            lacks, extra = sorted(names - set(recorded)), sorted(set(recorded) - names)
            detail = "; ".join(([f"it lacks {', '.join(lacks)}"] if lacks else [])
                               + ([f"it has {', '.join(extra)} besides"] if extra else []))
            raise ConfigError(f"the checkpoint's metrics are not this program's ({detail}: "
                              "made by another version of sim?): finish the run with that "
                              "version, or start a new one (a new hydra.run.dir)")


def _entries(config: str, snapshot: Snapshot) -> Iterator[tuple[str, np.ndarray]]:
    meta = {"config": config, "chunk_size": snapshot.chunk_size, "chunk": snapshot.chunk,
            "generation": snapshot.generation, "treedef": snapshot.state.treedef,
            "key_impls": snapshot.state.key_impls, "history": list(snapshot.history),
            "done": list(snapshot.done)}
    yield "meta", np.array(json.dumps(meta))
    for i, leaf in enumerate(snapshot.state.leaves):
        yield f"state/{i}", leaf
    for part in ("history", "done"):
        for i, values in enumerate(getattr(snapshot, part).values()):
            yield f"{part}/{i}", values
    yield "wall_time_s", snapshot.wall_time_s
    yield "peak_memory_bytes", snapshot.peak_memory_bytes


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(run_dir: str | os.PathLike, config: str, snapshot: Snapshot) -> Path:
    """Write the checkpoint atomically: beside its place, fsynced, then renamed; Ctrl-C or
    SIGTERM during the write arrives once it is done."""
    directory = Path(run_dir) / DIRECTORY
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    with signals_deferred():
        with replacing(path) as tmp, open(tmp, "wb") as file:
            np.savez(file, **dict(_entries(config, snapshot)))
            file.flush()
            os.fsync(file.fileno())
        _fsync_dir(directory)
    return path


def load(run_dir: str | os.PathLike) -> tuple[str, Snapshot] | None:
    """The checkpoint in a run directory, as (config YAML, snapshot); None if it has none."""
    path = Path(run_dir) / DIRECTORY / FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            state = HostTree([npz[f"state/{i}"] for i in range(len(meta["key_impls"]))],
                             meta["treedef"], meta["key_impls"])
            parts = {part: {name: npz[f"{part}/{i}"] for i, name in enumerate(meta[part])}
                     for part in ("history", "done")}
            snapshot = Snapshot(meta["chunk_size"], meta["chunk"], meta["generation"], state,
                                parts["history"], parts["done"], npz["wall_time_s"],
                                npz["peak_memory_bytes"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise ConfigError(f"the checkpoint {path} cannot be read ({type(error).__name__}: "
                          f"{error}): remove it to start again, or choose a new "
                          "hydra.run.dir") from None
    return meta["config"], snapshot


class Writer:
    """Saves the snapshots it is offered, at most one per ``interval_s`` seconds (the
    first after ``interval_s`` from its creation); builds only those it saves. A save
    that fails (a full disk) leaves no partial file and the last checkpoint, and a
    warning: the run goes on."""

    def __init__(self, run_dir: str | os.PathLike, config: str, interval_s: float) -> None:
        self.run_dir, self.config, self.interval_s = run_dir, config, interval_s
        self.last = time.monotonic()

    def __call__(self, snapshot: Callable[[], Snapshot]) -> None:
        if time.monotonic() - self.last < self.interval_s:
            return
        try:
            save(self.run_dir, self.config, snapshot())
        except OSError as error:  # a full disk: the run goes on, the last checkpoint stays
            print(f"warning: no checkpoint written ({error}); the run goes on",
                  file=sys.stderr)
        self.last = time.monotonic()


def remove(run_dir: str | os.PathLike) -> None:
    shutil.rmtree(Path(run_dir) / DIRECTORY, ignore_errors=True)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def differing_keys(saved: str, current: str) -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose values differ between two config YAMLs, with (saved, current)
    values, but those that do not change a run's numbers (``IGNORED_KEYS``)."""
    a, b = _flat(yaml.safe_load(saved) or {}), _flat(yaml.safe_load(current) or {})
    return {key: (a.get(key, "<unset>"), b.get(key, "<unset>"))
            for key in sorted(a.keys() | b.keys())
            if a.get(key, "<unset>") != b.get(key, "<unset>")
            and not any(key == i or key.startswith(i + ".") for i in IGNORED_KEYS)}


def _settings(keys: dict[str, tuple[Any, Any]], side: int) -> str:
    """One side's values of the differing keys, ``seeds=4, train.lr=0.01``; a group with
    keys set on one side only (another world: another schema) is named once, ``world.*
    (another world)``, rather than key by key."""
    regrouped = sorted({key.split(".")[0] for key, pair in keys.items()
                        if "." in key and "<unset>" in pair})
    return ", ".join([f"{key}={pair[side]!r}" for key, pair in keys.items()
                      if key.split(".")[0] not in regrouped]
                     + [f"{group}.* (another {group})" for group in regrouped])


def check_config(saved: str, current: str, what: str) -> None:
    """Raise ConfigError naming the differing keys unless the configs agree."""
    keys = differing_keys(saved, current)
    if keys:
        now, before = _settings(keys, 1), _settings(keys, 0)
        verb = "is" if len(keys) == 1 else "are"
        raise ConfigError(f"{now} {verb} not allowed: {what} was made with {before}; resume "
                          "with those, or choose a new hydra.run.dir")
