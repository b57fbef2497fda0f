"""sim: a simulator of model collapse and iterative distillation.

Importing it sets three XLA flags, each unless ``XLA_FLAGS`` already sets it, and only with
jaxlib 0.10 or newer (where they were measured; XLA aborts on a flag it does not know):

* ``--xla_force_host_platform_device_count=N``, N the cores this process may use: one CPU
  device per core, so that each core trains its own lanes (``sim.lanes.lane_mesh``). The
  ``lm`` benchmark trained 1.36x faster on 2 cores than with one device whose products
  split across both (docs/performance.md). Not set where ``JAX_NUM_CPU_DEVICES`` is;
  accelerators ignore it;
* ``--xla_cpu_use_xnnpack=true``: XNNPACK kernels for the CPU backend; LM training
  measured 1.6x-1.8x faster with them on 2 CPU cores (docs/performance.md);
* ``--xla_gpu_experimental_enable_fusion_autotuner=false``: on an H200 (jaxlib 0.11.2)
  the LM benchmark's generation step compiled in 22 s at 4 lanes, with XLA warning of a
  "very slow compile" of a reduction fusion, and had not finished compiling after 4
  minutes at 256 lanes, also with gemm autotuning off; the fusion autotuner, which tries
  Triton code for large fusions, is the known cause of such compile times
  (docs/performance.md). Other backends ignore it.

Flags are read when JAX first makes a backend, so this must run before any computation.
With the same jaxlib it also lowers ``jax.random``'s threefry hash as straight-line code on
the CPU instead of JAX's loop, which compiles 3x and runs 2.5-4x faster with the same
numbers (``sim.threefry``).
"""

import os
from importlib import metadata


def _cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_FLAGS = {"--xla_cpu_use_xnnpack": "true",
          "--xla_gpu_experimental_enable_fusion_autotuner": "false"}
if "JAX_NUM_CPU_DEVICES" not in os.environ:
    _FLAGS["--xla_force_host_platform_device_count"] = str(_cores())


def jaxlib_at_least(major: int, minor: int) -> bool:
    try:
        found = metadata.version("jaxlib").split(".")[:2]
        return (int(found[0]), int(found[1])) >= (major, minor)
    except (metadata.PackageNotFoundError, ValueError, IndexError):
        return False


def add_xla_flags(flags: dict[str, str]) -> None:
    """Append each ``--flag=value`` to ``XLA_FLAGS`` unless ``XLA_FLAGS`` already sets the
    flag (read when JAX first makes a backend)."""
    for flag, value in flags.items():
        if flag not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}={value}".strip()


if jaxlib_at_least(0, 10):
    add_xla_flags(_FLAGS)
    from sim.threefry import lower_unrolled

    lower_unrolled()
