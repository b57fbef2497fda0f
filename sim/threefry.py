"""jax.random's threefry hash as straight-line code on the CPU: faster to compile and to run.

JAX lowers the threefry2x32 hash behind every ``jax.random`` key and draw as a loop of five
iterations on the CPU (to keep programs small) and as straight-line code on other
backends. With jaxlib 0.10's CPU compiler the straight-line form wins both ways (2 cores,
docs/performance.md): 8 small draws compiled in 1.3 s instead of 3.0-3.9 s; a (4096, 1024)
normal draw ran in 29-47 ms instead of 120 ms; ``split(key, 16)`` over 5,000 vmapped keys
in 0.3-0.75 ms instead of 1.1 ms. The hash, and so every key and number, is the same either
way (``tests/test_threefry.py``).

Importing ``sim`` registers it (jaxlib 0.10 or newer, where it was measured). It needs
JAX's private lowering module; where that lacks the names used here, JAX's own lowering
stays.
"""

from __future__ import annotations


def lower_unrolled(unrolled: bool = True) -> bool:
    """Lower threefry2x32 on the CPU as straight-line code (or, ``unrolled=False``, as
    JAX's loop again); whether the lowering could be registered. Programs already
    compiled keep theirs (``jax.clear_caches()`` drops them)."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as threefry

        if unrolled:  # as JAX registers it for other backends
            mlir.register_lowering(threefry.threefry2x32_p,
                                   threefry._threefry2x32_lowering_rule, platform="cpu",
                                   inline=False)
        else:
            mlir.register_lowering(threefry.threefry2x32_p,
                                   threefry._threefry2x32_cpu_lowering_rule, platform="cpu")
    except (ImportError, AttributeError):
        return False
    return True
