"""sim.lapack: jnp.linalg's results, with every LAPACK call on the CPU given one matrix
(jaxlib 0.10's batched calls can deadlock its thread pool)."""

import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
import pytest

from sim import lapack

CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU only")


def _spd(shape, seed=0):
    a = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return a @ np.swapaxes(a, -1, -2) / shape[-1] + np.eye(shape[-1], dtype=np.float32)


def _rhs(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# (sim.lapack's function, jnp's, operands): plain, batched by hand, broadcast right-hand sides
CASES = {
    "qr": (lapack.qr, jnp.linalg.qr, (_rhs((3, 7, 4)),)),
    "solve vector": (lapack.solve, jnp.linalg.solve, (_spd((5, 5)), _rhs((5,)))),
    "solve batched": (lapack.solve, jnp.linalg.solve, (_spd((3, 5, 5)), _rhs((3, 5, 2)))),
    "solve broadcast": (lapack.solve, jnp.linalg.solve, (_spd((3, 5, 5)), _rhs((5, 2)))),
    "solve_triangular": (
        lambda a, b: lapack.solve_triangular(a, b, lower=True),
        # b broadcast by hand: jax 0.6.2 (what pip installs on Python 3.10) does not
        lambda a, b: jax.scipy.linalg.solve_triangular(
            a, jnp.broadcast_to(b, a.shape[:-2] + b.shape), lower=True),
        (np.tril(_spd((4, 5, 5))), _rhs((5, 3)))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_results_are_jnps_plain_jitted_and_vmapped(case):
    ours, theirs, operands = CASES[case]
    expected = theirs(*operands)
    for fn in (ours, jax.jit(ours)):
        for got, want in zip(jax.tree.leaves(fn(*operands)), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    lanes = [np.stack([x, 2 * x]) for x in operands]  # a lane axis over every operand
    got = jax.jit(jax.vmap(ours))(*lanes)
    want = jax.vmap(theirs)(*lanes)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@CPU_ONLY
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_compiled_lapack_call_takes_one_matrix(case):
    """Batched by hand and by vmap, each compiled LAPACK custom call has no batch axis:
    its first operand has the two matrix dimensions only."""
    ours, _, operands = CASES[case]
    lanes = [np.stack([x, 2 * x]) for x in operands]
    hlo = jax.jit(jax.vmap(ours)).lower(*lanes).compile().as_text()
    calls = [line for line in hlo.splitlines()
             if "custom-call(" in line and "lapack" in line]
    assert calls
    for call in calls:
        constraints = call.split("operand_layout_constraints={", 1)[1]
        first = re.match(r"\w+\[([\d,]*)\]", constraints).group(1)  # f32[m,n]{1,0}: m,n
        assert first.count(",") == 1, call


@CPU_ONLY
def test_two_large_factorisations_at_once_finish():
    """The hang itself: two independent Cholesky factorisations of 10,000 matrices in one
    program took every thread of a 2-core host's pool and never finished with jaxlib
    0.10's batched calls (under the suite's XLA flags two batched triangular solves
    finish, so the factorisation is the case that shows it); one matrix at a time
    (``one_matrix_at_a_time``, which every function here uses), 20 runs take a few
    seconds."""
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp
        from sim import lapack
        x = jax.random.normal(jax.random.key(0), (2, 10000, 10, 10))
        spd = jnp.einsum("kbij,kblj->kbil", x, x) + 10 * jnp.eye(10)
        cholesky = lapack.one_matrix_at_a_time(jnp.linalg.cholesky, 2)
        two = jax.jit(lambda a, c: cholesky(a).sum() + cholesky(2 * c).sum())
        for i in range(20):
            two(spd[0], spd[1] + i * 1e-3).block_until_ready()
    """)
    try:
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("two batched Cholesky factorisations hung")
