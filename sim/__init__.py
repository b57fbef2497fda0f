"""sim: a simulator of model collapse and iterative distillation.

Importing it turns on XLA's XNNPACK kernels for the CPU backend (``--xla_cpu_use_xnnpack``)
unless ``XLA_FLAGS`` already sets that flag: LM training measured 1.6x-1.8x faster with
them on 2 CPU cores (docs/performance.md). Flags are read when JAX first makes its CPU
backend, so this must run before any computation; accelerators ignore the flag. It is set
only with jaxlib 0.10 or newer (where it was measured): XLA aborts on a flag it does not
know, and older releases may not know this one.
"""

import os
from importlib import metadata

_XNNPACK = "--xla_cpu_use_xnnpack"


def _jaxlib_at_least(major: int, minor: int) -> bool:
    try:
        found = metadata.version("jaxlib").split(".")[:2]
        return (int(found[0]), int(found[1])) >= (major, minor)
    except (metadata.PackageNotFoundError, ValueError, IndexError):
        return False


if _XNNPACK not in os.environ.get("XLA_FLAGS", "") and _jaxlib_at_least(0, 10):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_XNNPACK}=true".strip()
