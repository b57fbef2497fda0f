"""Eigenvalues of symmetric matrices without their eigenvectors.

``jnp.linalg.eigvalsh`` computes the eigenvectors and drops them: JAX lowers every symmetric
eigendecomposition to LAPACK's ``syevd`` with ``jobz='V'``. On the CPU ``eigvalsh`` here
calls the ``syevd`` that jaxlib registers for that lowering with ``jobz='N'`` (eigenvalues
only): 10,000 10 x 10 matrices took 16.0 ms instead of 28.6 ms on 2 CPU cores (the Vendi
score's Gram matrices use it; the Gaussian world's W2 now takes ``sim.smallmat``'s nuclear
norm). The target is jaxlib's own, not a public API, so it is used only where a probe finds
it and it returns ``jnp.linalg.eigvalsh``'s eigenvalues; elsewhere (other backends, a
jaxlib without it) this is ``jnp.linalg.eigvalsh``.

Both are called one matrix at a time (``sim.lapack.one_matrix_at_a_time``: a batch, by
hand or by vmap, becomes a loop), never on a batch: jaxlib 0.10's batched LAPACK calls can
deadlock its CPU thread pool (a watermarked LM chain
with two eigenvalue calls hung so, docs/performance.md). Matrix by matrix, 10,000 10 x 10
matrices took as long as one batched call (83-107 ms both).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sim import lapack

Array = jax.Array


def _lapack_target(dtype: np.dtype) -> str | None:
    """jaxlib's ``syevd`` FFI target for real ``dtype``, or None."""
    try:
        from jax._src.lib import lapack
        return lapack.prepare_lapack_call("syevd_ffi", dtype)
    except Exception:  # noqa: BLE001 - any failure means: not available
        return None


def _syevd_values(target: str, x_NxN: Array) -> Array:
    """Ascending eigenvalues of one matrix from LAPACK ``syevd`` with ``jobz='N'`` (NaN
    where it fails)."""
    out = (jax.ShapeDtypeStruct(x_NxN.shape, x_NxN.dtype),
           jax.ShapeDtypeStruct(x_NxN.shape[:-1], x_NxN.dtype),
           jax.ShapeDtypeStruct((), jnp.int32))
    _, w_N, info = jax.ffi.ffi_call(target, out, input_output_aliases={0: 0})(
        x_NxN, mode=np.uint8(ord("N")), uplo=np.uint8(ord("L")))
    return jnp.where(info == 0, w_N, jnp.nan)


@functools.cache
def _cpu_target(dtype: np.dtype) -> str | None:
    """The target, where it runs on the CPU and agrees with ``jnp.linalg.eigvalsh``."""
    target = _lapack_target(dtype)
    if target is None:
        return None
    probe = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 1.0]], dtype)
    try:
        with jax.ensure_compile_time_eval():
            found = np.asarray(jax.jit(functools.partial(_syevd_values, target))(probe))
    except Exception:  # noqa: BLE001 - not registered, or another signature
        return None
    expected = np.linalg.eigvalsh(probe.astype(np.float64))
    return target if np.allclose(found, expected, rtol=1e-5, atol=1e-6) else None


def eigvalsh(x_xNxN: Array) -> Array:
    """Ascending eigenvalues of real symmetric matrices (lower triangles read), like
    ``jnp.linalg.eigvalsh`` after symmetrising."""
    x_xNxN = jnp.asarray(x_xNxN)
    x_xNxN = (x_xNxN + jnp.swapaxes(x_xNxN, -1, -2)) / 2
    target = None
    if jax.default_backend() == "cpu" and x_xNxN.dtype in (jnp.float32, jnp.float64):
        target = _cpu_target(np.dtype(x_xNxN.dtype))
    values = jnp.linalg.eigvalsh if target is None else functools.partial(_syevd_values,
                                                                           target)
    return lapack.one_matrix_at_a_time(values, 2)(x_xNxN)
