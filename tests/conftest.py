import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/stats.py

# The suite is compile-bound (small programs, each compiled once): LLVM's optimisation
# level 0 compiles them about a third faster (an LM chain's fixture: 31 s -> 21 s) and
# changes no result (XLA's CPU code is built without fast-math either way). Set before JAX
# makes its backend; subprocesses (python -m sim) inherit it. Unless XLA_FLAGS sets it.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()


@pytest.fixture(autouse=True)
def _trace_afresh_in_mutmut_stats_pass():
    """mutmut's stats pass links each mutated function to the tests that call it, but a
    function under jax.jit runs (and is seen) only while it is traced: without this, only
    the first test to trace a program would check the mutants of what it calls."""
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        import jax

        jax.clear_caches()
    yield
