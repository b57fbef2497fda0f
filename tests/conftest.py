import os
import sys
from pathlib import Path

import pytest

from sim import add_xla_flags, compile_cache, jaxlib_at_least  # sets no backend: only XLA_FLAGS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/stats.py

# The suite is compile-bound (small programs, each compiled once), so XLA's CPU compiler is
# told to compile fast rather than emit fast code: LLVM optimisation level 0 and the older
# loop emitters instead of the fusion emitters. A tiny LM chain (2 lanes, 2 generations)
# took 28.8 s at the defaults, 13.1 s at level 0 and 8.1 s with both; its training would
# run about 20% slower, which these models never notice. Results agree with the defaults'
# to float32 rounding (a sharded run differed by 3e-6 relative), so tests that compare with
# a subprocess pass these flags on. Set before JAX makes its backend; subprocesses
# (python -m sim) inherit them. Each unless XLA_FLAGS sets it; the second only with jaxlib
# 0.10, where it was measured: 0.11 removed the older emitters and their flag, and XLA
# aborts on a flag it does not know (the whole suite, without a word).
_FAST_COMPILE = {"--xla_backend_optimization_level": "0"}
if jaxlib_at_least(0, 10) and not jaxlib_at_least(0, 11):
    _FAST_COMPILE["--xla_cpu_use_fusion_emitters"] = "false"
add_xla_flags(_FAST_COMPILE)

# JAX's persistent compile cache for every test, not only after a test's run switched it on
# (``sim.experiment.run`` does, in the same directory): the two workers, and later suites,
# load what any of them compiled. Programs that compile in under a tenth of a second (most
# of the suite's ~4,000 compiles, eager operations) are not worth a file each.
compile_cache.configure(True, min_compile_seconds=0.1)


@pytest.fixture(autouse=True)
def _trace_afresh_in_mutmut_stats_pass():
    """mutmut's stats pass links each mutated function to the tests that call it, but a
    function under jax.jit runs (and is seen) only while it is traced: without this, only
    the first test to trace a program would check the mutants of what it calls."""
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        import jax

        jax.clear_caches()
    yield
