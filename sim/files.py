"""Files replaced whole: written beside their place, then renamed into it, so a reader (or
an interrupted writer) never leaves half a file there. Imports no JAX (Hydra's plugins use
it)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write: renamed onto ``path`` when
    the block ends without an error, removed in any case."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
