"""The run directory: checked writable before Hydra makes it, and held by one process.

``CheckOutputDir`` is a Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): before
Hydra creates ``hydra.run.dir`` (or a multirun's ``hydra.sweep.dir``) it makes sure the
directory can be created and written, so that a bad one is one line and exit status 2
instead of a traceback. ``lock`` holds a run directory for one process (an advisory
``flock`` that the system drops when the process dies, even by SIGKILL): a second process
given the same directory, to resume a run that is still running or by a clash of names, is
refused instead of writing over the first one's checkpoint and results.

Hydra loads callbacks in the launching process, so this module imports no JAX.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sim.errors import ConfigError

LOCK = ".lock"


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
        print(f"error: {key}={directory!r} is not allowed: a directory this user can create "
              f"and write in ({problem})", file=sys.stderr)
        sys.exit(2)


class CheckOutputDir(Callback):
    """Refuse an output directory that cannot be written, before Hydra makes it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_writable(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_writable(str(config.hydra.sweep.dir), "hydra.sweep.dir")


@contextmanager
def lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold ``run_dir`` for this process; ConfigError if another process holds it."""
    path = Path(run_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConfigError(f"hydra.run.dir={str(run_dir)!r} is not allowed: another "
                              f"process (pid {holder}) is running in it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
