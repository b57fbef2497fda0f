"""Reading runs and sweeps written by ``python -m sim``; never imports simulator internals."""

from analysis.load import load_run, load_sweep

__all__ = ["load_run", "load_sweep"]
