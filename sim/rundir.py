"""The run directory: checked writable before Hydra makes it, and held by one process.

``CheckOutputDir`` is a Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): before
Hydra creates ``hydra.run.dir`` (or a multirun's ``hydra.sweep.dir``) it makes sure the
directory can be created and written, so that a bad one is one line and exit status 2
instead of a traceback. ``claim`` takes a run directory for one process (an advisory
``flock`` that the system drops when the process dies, even by SIGKILL) and says what it
holds: nothing, a finished ``results.nc`` or a checkpoint, either of which must have been
made with the same config. A second process given the same directory, to resume a run that
is still running or by a clash of names, is refused instead of writing over the first
one's checkpoint and results.

Hydra loads callbacks in the launching process, so this module imports no JAX.
"""

from __future__ import annotations

import copy
import fcntl
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sim import checkpoint
from sim.checkpoint import Snapshot
from sim.errors import ConfigError

LOCK = ".lock"
RESULTS = "results.nc"


def unwritable(directory: str | os.PathLike) -> str | None:
    """Why ``directory`` cannot be created and written in (None if it can): its nearest
    existing ancestor is probed with a temporary directory, made and removed."""
    path = Path(directory).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sim-probe-", dir=existing))
    except OSError as error:
        return f"{existing}: {error.strerror or error}"
    return None


def _require_writable(directory: str, key: str) -> None:
    problem = unwritable(directory)
    if problem:
        _exit(f"{key}={directory!r} is not allowed: a directory this user can create and "
              f"write in ({problem})")


def _exit(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def task_yaml(config: DictConfig) -> str:
    """A job's resolved config as its task function sees it (no ``hydra`` node)."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return OmegaConf.to_yaml(task)


class CheckOutputDir(Callback):
    """Refuse an output directory that cannot be written, before Hydra makes it. Every job
    takes its run directory (``claim``) before anything is written into it, and only then
    writes Hydra's record of the job (``.hydra/``: ``hydra.output_subdir`` is null in
    ``conf/config.yaml``, so Hydra leaves that to this callback): a job refused, as another
    config's rerun in a finished or checkpointed directory, leaves the directory as it was,
    its ``.hydra/`` included. (A ``hydra.output_subdir`` set on the command line is Hydra's
    to write, before the claim.)"""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = str(config.hydra.run.dir)
        _require_writable(run_dir, "hydra.run.dir")
        _claim_or_exit(run_dir, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_writable(str(config.hydra.sweep.dir), "hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.runtime.output_dir)
        _claim_or_exit(run_dir, config)
        if config.hydra.output_subdir is None:
            write_hydra_record(run_dir / ".hydra", config)


def _claim_or_exit(run_dir: str | os.PathLike, config: DictConfig) -> None:
    try:
        claim(run_dir, task_yaml(config))
    except ConfigError as error:
        _exit(str(error))


def write_hydra_record(directory: Path, config: DictConfig) -> None:
    """What Hydra writes into a job's ``hydra.output_subdir``: the job's config, Hydra's
    config and the job's overrides (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(task_yaml(config), encoding="utf-8")
    (directory / "hydra.yaml").write_text(OmegaConf.to_yaml(HydraConfig.instance().cfg),
                                          encoding="utf-8")
    (directory / "overrides.yaml").write_text(
        OmegaConf.to_yaml(config.hydra.overrides.task), encoding="utf-8")


class Claim(NamedTuple):
    """What a run directory held when this process took it."""

    fresh: bool  # nothing: a new run (its directory may go if the config is refused)
    finished: bool  # a results.nc made with this config: nothing to run
    saved: Snapshot | None  # a checkpoint made with this config: resume from it


_claims: dict[Path, tuple[int, str, Claim]] = {}  # run dir -> (lock fd, config, claim)


def _hold(run_dir: Path) -> int:
    """Lock ``run_dir`` (made if need be) for this process: the lock file's descriptor."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(f"hydra.run.dir={str(run_dir)!r} is not allowed: another process "
                          f"(pid {holder}) is running in it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def read_config(results: Path) -> str:
    """The resolved config YAML a results file was made with (its ``config`` attr)."""
    import xarray as xr

    with xr.open_dataset(results, engine="h5netcdf") as ds:
        return str(ds.attrs.get("config", ""))


def claim(run_dir: str | os.PathLike, config: str) -> Claim:
    """Take ``run_dir`` for this process (until ``release`` or the process ends) and say
    what it holds; ConfigError if another process holds it, or if its results or
    checkpoint were made with another config (``config``: the job's resolved YAML)."""
    run_dir = Path(run_dir).absolute()
    if run_dir in _claims and _claims[run_dir][1] == config:
        return _claims[run_dir][2]
    fd = _claims[run_dir][0] if run_dir in _claims else _hold(run_dir)
    for stale in [*run_dir.glob(f".{RESULTS}.*.tmp"),  # a killed process's half-written file
                  *run_dir.glob(f"{checkpoint.DIRECTORY}/.{checkpoint.FILE}.*.tmp")]:
        stale.unlink(missing_ok=True)
    try:
        results = run_dir / RESULTS
        saved = None
        if results.exists():
            checkpoint.check_config(read_config(results), config,
                                    f"the finished run in {run_dir}")
        else:
            found = checkpoint.load(run_dir)
            if found is not None:
                checkpoint.check_config(found[0], config, f"the checkpoint in {run_dir}")
                saved = found[1]
    except ConfigError:
        _claims.pop(run_dir, None)
        os.close(fd)
        raise
    taken = Claim(not results.exists() and saved is None, results.exists(), saved)
    _claims[run_dir] = (fd, config, taken)
    return taken


def release(run_dir: str | os.PathLike) -> None:
    """Let other processes have ``run_dir``."""
    held = _claims.pop(Path(run_dir).absolute(), None)
    if held is not None:
        os.close(held[0])
