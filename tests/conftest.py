import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/stats.py

# The suite is compile-bound (small programs, each compiled once): LLVM's optimisation
# level 0 compiles them about a third faster (an LM chain's fixture: 31 s -> 21 s) and
# changes no result (XLA's CPU code is built without fast-math either way). Set before JAX
# makes its backend; subprocesses (python -m sim) inherit it. Unless XLA_FLAGS sets it.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

