"""A sweep of traced settings as one vectorised job against one process per point.

    python benchmarks/sweep.py [--cache] -- OVERRIDES...

e.g. ``python benchmarks/sweep.py -- sampling.temperature=0.5,0.8,1.0 mix=fresh
mix.real_fraction=0,0.1,0.5 generations=3 seeds=4``. Runs, as a user would and each in a
fresh temporary directory:

1. ``python -m sim -m OVERRIDES``: the vectorised sweeper, all points as lanes of one job;
2. ``python -m sim POINT`` for every point of the traced sweeps, one process after another
   (what a plain Hydra multirun costs: each point compiles its own program).

Both with the persistent compilation cache off (``compile_cache=false``), unless --cache
(then each mode gets an empty cache of its own, so later points of mode 2 load what the
first compiled). Prints the wall time of each and their ratio.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sim.grid import TRACED_KEYS

ROOT = Path(__file__).resolve().parents[1]


def _timed(args: list[str], cwd: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sim", *args], cwd=cwd, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"python -m sim {' '.join(args)} failed:\n{out.stderr}")
    return time.perf_counter() - start


def points(overrides: list[str]) -> list[list[str]]:
    """One override list per point of the traced sweeps (the others kept as given)."""
    fixed, traced = [], []
    for override in overrides:
        key, _, value = override.partition("=")
        if key in TRACED_KEYS and "," in value:
            traced.append([f"{key}={v}" for v in value.split(",")])
        else:
            fixed.append(override)
    return [fixed + list(point) for point in itertools.product(*traced)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", action="store_true",
                        help="persistent compilation cache on (a fresh one per mode)")
    parser.add_argument("overrides", nargs="+")
    args = parser.parse_args()
    common = ["progress=false"]
    runs = points(args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        cache = lambda mode: ([f"compile_cache_dir={tmp}/cache-{mode}"]  # noqa: E731
                              if args.cache else ["compile_cache=false"])
        vectorised = _timed(["-m", *args.overrides, *common, *cache("vectorised")], tmp)
        separate = [_timed([*point, *common, *cache("separate")], tmp) for point in runs]
    print(f"{len(runs)} points, persistent cache {'on' if args.cache else 'off'}")
    print(f"vectorised, one job:       {vectorised:8.1f} s")
    print(f"one process per point:     {sum(separate):8.1f} s  "
          f"(each {min(separate):.1f}-{max(separate):.1f} s)")
    print(f"ratio:                     {sum(separate) / vectorised:8.2f}x")


if __name__ == "__main__":
    main()
