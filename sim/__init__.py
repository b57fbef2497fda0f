"""sim: a simulator of model collapse and iterative distillation.

Importing it turns on XLA's XNNPACK kernels for the CPU backend (``--xla_cpu_use_xnnpack``)
unless ``XLA_FLAGS`` already sets that flag: LM training measured 1.6x-1.8x faster with
them on 2 CPU cores (docs/performance.md). Flags are read when JAX first makes its CPU
backend, so this must run before any computation; accelerators ignore the flag.
"""

import os

_XNNPACK = "--xla_cpu_use_xnnpack"
if _XNNPACK not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_XNNPACK}=true".strip()
