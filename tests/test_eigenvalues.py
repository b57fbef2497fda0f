"""sim.eigenvalues.eigvalsh: the eigenvalues of jnp.linalg.eigvalsh, from LAPACK's
eigenvalues-only routine on the CPU or from jnp.linalg.eigvalsh itself where that routine
is not found."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim import eigenvalues


def _matrices(shape, seed=0):
    a = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return a @ np.swapaxes(a, -1, -2) / shape[-1]


@pytest.mark.parametrize("available", [True, False])
def test_eigenvalues_match_jnp_under_jit_and_vmap(monkeypatch, available):
    if not available:
        monkeypatch.setattr(eigenvalues, "_cpu_target", lambda dtype: None)
    s = _matrices((6, 4, 9, 9))
    s[..., 0, 1] += 0.5  # not symmetric: both read the symmetrised matrix
    expected = np.linalg.eigvalsh(((s + np.swapaxes(s, -1, -2)) / 2).astype(np.float64))
    for fn in (eigenvalues.eigvalsh, jax.jit(eigenvalues.eigvalsh),
               jax.jit(jax.vmap(jax.vmap(eigenvalues.eigvalsh)))):
        np.testing.assert_allclose(fn(jnp.asarray(s)), expected, rtol=2e-5, atol=2e-5)


def test_the_cpu_path_is_lapacks_when_jaxlib_has_it():
    """On this CPU the probe finds the routine (if it stopped, every call would silently
    take the slower path: the fallback test above would still pass)."""
    if jax.default_backend() != "cpu":
        pytest.skip("CPU only")
    assert eigenvalues._cpu_target(np.dtype(np.float32)) is not None


def test_lapack_is_called_one_matrix_at_a_time():
    """jaxlib 0.10 splits a batched LAPACK call over XLA's thread pool and blocks the
    thread it runs on: two such calls at once can hang a 2-core host for ever. Every
    compiled call here, batched by hand or by vmap, takes one matrix."""
    if eigenvalues._cpu_target(np.dtype(np.float32)) is None:
        pytest.skip("no LAPACK target: jnp.linalg.eigvalsh")
    s = jnp.asarray(_matrices((6, 4, 9, 9)))
    for fn in (eigenvalues.eigvalsh, jax.vmap(jax.vmap(eigenvalues.eigvalsh)),
               lambda x: (eigenvalues.eigvalsh(x), eigenvalues.eigvalsh(2 * x))):
        hlo = jax.jit(fn).lower(s).compile().as_text()
        calls = [line for line in hlo.splitlines() if "custom-call(" in line and "syevd" in line]
        assert calls and all("= (f32[9,9]{" in c for c in calls), calls  # (matrix, values, info)
