"""JAX's persistent compilation cache: a program compiled once is loaded, not recompiled,
by later jobs and runs of the same shapes (the key covers the program, JAX version, backend
and flags, so a stale entry is never used)."""

from __future__ import annotations

import os
from pathlib import Path

import jax


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/sim/jax``, or ``~/.cache/sim/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sim" / "jax"


def configure(enabled: bool, directory: str | None = None,
              min_compile_seconds: float | None = None) -> Path | None:
    """Switch the cache on (in ``directory``, or the default) or off; the directory used.
    ``min_compile_seconds``: cache only programs that took at least this long to compile
    (None: JAX's threshold, 1 s unless set)."""
    jax.config.update("jax_enable_compilation_cache", enabled)
    if not enabled:
        return None
    if min_compile_seconds is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    path = Path(directory).expanduser() if directory else default_directory()
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path
