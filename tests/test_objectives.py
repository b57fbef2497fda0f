"""Distillation objectives: non-negativity, minima, gradient descent, JSD endpoints, top-k."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sim import objectives as ob

V = 6


def _log_softmax64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _kl64(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    p = np.exp(lp)
    return np.sum(np.where(p > 0, p * (lp - lq), 0.0), -1)


def _jsd64(lp: np.ndarray, lq: np.ndarray, beta: float) -> np.ndarray:
    p, q = np.exp(lp), np.exp(lq)
    lm = np.log(beta * p + (1 - beta) * q)
    return (beta * _kl64(lp, lm) + (1 - beta) * _kl64(lq, lm)) / (beta * (1 - beta))


def _inputs(seed: int, rows: int = 4, hidden: int = 5, k: int = 3) -> tuple:
    r = np.random.default_rng(seed)
    t_logits = jnp.asarray(2 * r.standard_normal((rows, V)), jnp.float32)
    s_logits = jnp.asarray(2 * r.standard_normal((rows, V)), jnp.float32)
    labels = jnp.asarray(r.integers(0, V, rows), jnp.int32)
    lp, idx = ob.teacher_topk(t_logits, k)
    teacher = ob.Teacher(labels, t_logits, lp, idx, jnp.asarray(r.standard_normal((rows, 4)),
                                                                 jnp.float32))
    proj = ob.init_projection(jax.random.key(seed), hidden, 4)
    student = ob.Student(s_logits, jnp.asarray(r.standard_normal((rows, hidden)), jnp.float32),
                         proj)
    return student, teacher


HP = ob.LossHParams(alpha=0.3, tau=2.0, beta=0.4, gamma=0.5)


@pytest.mark.parametrize("name", sorted(ob.OBJECTIVES))
def test_non_negative_and_finite(name: str) -> None:
    fn = ob.OBJECTIVES[name]
    for seed in range(3):
        student, teacher = _inputs(seed)
        value = float(fn(student, teacher, HP, None))
        assert np.isfinite(value) and value >= -1e-6, (name, value)


def test_zero_at_student_equal_teacher() -> None:
    student, teacher = _inputs(0)
    same = student._replace(logits=teacher.logits + 3.0)  # softmax-equal
    hp0 = ob.LossHParams(alpha=0.0, tau=1.7, beta=0.3, gamma=1.0)
    for name in ("soft", "reverse_kl", "jsd"):
        assert abs(float(ob.OBJECTIVES[name](same, teacher, hp0, None))) < 1e-6, name
    for beta in (0.0, 1e-5, 0.5, 1.0 - 1e-5, 1.0):
        assert abs(float(ob.jsd(same.logits, teacher.logits, beta))) < 1e-6
    for missing in ("renormalise", "uniform"):
        target = ob.topk_target(teacher.topk_logprobs, teacher.topk_indices, V, missing)
        assert abs(float(ob.topk(target, teacher.topk_logprobs, teacher.topk_indices,
                                 missing))) < 1e-6
    # Feature: projection fitted exactly (teacher hidden = student hidden @ W + b).
    t_hidden = student.hidden @ student.projection["kernel"] + student.projection["bias"]
    value = ob.OBJECTIVES["feature"](same, teacher._replace(hidden=t_hidden), hp0, None)
    assert abs(float(value)) < 1e-6
    # Hard: the minimum of CE over the student is at the label's one-hot (value -> 0).
    onehot = 50.0 * jax.nn.one_hot(teacher.labels, V)
    assert float(ob.hard(onehot, teacher.labels)) < 1e-6


def test_soft_and_hard_match_formulas() -> None:
    student, teacher = _inputs(1)
    ls, lt = _log_softmax64(student.logits), _log_softmax64(teacher.logits)
    ce = -ls[np.arange(4), np.asarray(teacher.labels)]
    np.testing.assert_allclose(ob.hard(student.logits, teacher.labels), ce.mean(), rtol=1e-5)
    alpha, tau = 0.3, 2.0
    kl_tau = _kl64(_log_softmax64(np.asarray(teacher.logits) / tau),
                   _log_softmax64(np.asarray(student.logits) / tau))
    expected = np.mean(alpha * ce + (1 - alpha) * tau**2 * kl_tau)
    got = ob.soft(student.logits, teacher.logits, teacher.labels, alpha, tau)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(ob.reverse_kl(student.logits, teacher.logits),
                               _kl64(ls, lt).mean(), rtol=1e-5)
    # Weighted mean: zero-weight rows are ignored even when their loss is not finite.
    w = jnp.array([1.0, 0.0, 2.0, 0.0])
    bad = student.logits.at[1].set(jnp.nan)
    np.testing.assert_allclose(ob.hard(bad, teacher.labels, w),
                               (ce[0] + 2 * ce[2]) / 3, rtol=1e-5)
    # Per-example weights broadcast over a trailing position axis (N x L x V logits).
    seq = jnp.stack([student.logits, student.logits[::-1]], axis=1)  # 4 x 2 x V
    seq_labels = jnp.stack([teacher.labels, teacher.labels[::-1]], axis=1)
    ce2 = np.stack([ce, -ls[::-1][np.arange(4), np.asarray(teacher.labels)[::-1]]], 1)
    np.testing.assert_allclose(ob.hard(seq, seq_labels, jnp.array([1.0, 0.0, 1.0, 0.0])),
                               (ce2[0].sum() + ce2[2].sum()) / 4, rtol=1e-5)


def test_jsd_formula_and_endpoint_continuity() -> None:
    student, teacher = _inputs(2, rows=8)
    lp, lq = _log_softmax64(teacher.logits), _log_softmax64(student.logits)
    fn = jax.jit(ob.jsd)  # beta traced: one compile for every value
    for beta in (1e-4, 0.1, 0.5, 0.9, 1 - 1e-4):
        np.testing.assert_allclose(fn(student.logits, teacher.logits, beta),
                                   _jsd64(lp, lq, beta).mean(), rtol=2e-5)
    d0, d1 = float(fn(student.logits, teacher.logits, 0.0)), float(
        fn(student.logits, teacher.logits, 1.0))
    np.testing.assert_allclose(d0, _kl64(lp, lq).mean(), rtol=1e-5)  # forward KL(P||Q)
    np.testing.assert_allclose(d1, _kl64(lq, lp).mean(), rtol=1e-5)  # reverse KL(Q||P)
    # Continuity: the gap to the endpoint value shrinks linearly with the distance to it.
    for end, value in ((0.0, d0), (1.0, d1)):
        gaps = [abs(float(fn(student.logits, teacher.logits, abs(end - eps))) - value)
                for eps in (1e-3, 1e-4, 1e-5)]
        assert gaps[1] < 0.01 * value and gaps[1] < 0.2 * gaps[0], (end, gaps)
        assert gaps[2] < 0.001 * value, (end, gaps)
    # Swept under vmap (beta traced): the whole curve matches float64, endpoints included.
    betas = np.linspace(0.0, 1.0, 41)
    curve = jax.vmap(lambda b: ob.jsd(student.logits, teacher.logits, b))(jnp.asarray(betas))
    reference = [_jsd64(lp, lq, b).mean() for b in betas[1:-1]]
    np.testing.assert_allclose(curve, [d0, *reference, d1], rtol=1e-4)
    assert fn._cache_size() == 1


def test_jsd_gradients_finite_with_zero_teacher_probs() -> None:
    student, teacher = _inputs(3)
    t_logits = teacher.logits.at[:, 0].set(-jnp.inf)  # teacher puts no mass on token 0
    grad = jax.jit(jax.grad(ob.jsd))
    for beta in (0.0, 1e-4, 0.5, 1 - 1e-4):
        g = grad(student.logits, t_logits, beta)
        assert bool(jnp.all(jnp.isfinite(g))), beta
    assert bool(jnp.isinf(ob.jsd(student.logits, t_logits, 1.0)))  # reverse KL: infinite


def test_topk_hand_computed() -> None:
    p = np.array([0.4, 0.3, 0.2, 0.07, 0.03])
    lp, idx = ob.teacher_topk(jnp.log(jnp.asarray(p[::-1].copy(), jnp.float32)), 2)
    np.testing.assert_array_equal(idx, [4, 3])
    target_r = np.exp(ob.topk_target(lp, idx, 5, "renormalise"))
    np.testing.assert_allclose(target_r, [0, 0, 0, 3 / 7, 4 / 7], atol=1e-6)
    target_u = np.exp(ob.topk_target(lp, idx, 5, "uniform"))
    np.testing.assert_allclose(target_u, [0.1, 0.1, 0.1, 0.3, 0.4], atol=1e-6)
    uniform_student = jnp.zeros((5,))  # q = 0.2 everywhere
    expected_r = 4 / 7 * np.log(20 / 7) + 3 / 7 * np.log(15 / 7)
    expected_u = 0.4 * np.log(2) + 0.3 * np.log(1.5) + 0.3 * np.log(0.5)
    np.testing.assert_allclose(ob.topk(uniform_student, lp, idx, "renormalise"), expected_r,
                               rtol=1e-5)
    np.testing.assert_allclose(ob.topk(uniform_student, lp, idx, "uniform"), expected_u,
                               rtol=1e-5)
    # k = V: both modes are the forward KL to the full teacher.
    lp5, idx5 = ob.teacher_topk(jnp.log(jnp.asarray(p, jnp.float32)), 5)
    for missing in ("renormalise", "uniform"):
        np.testing.assert_allclose(ob.topk(uniform_student, lp5, idx5, missing),
                                   np.sum(p * np.log(p / 0.2)), rtol=1e-5)


def test_gradient_descent_moves_student_toward_teacher() -> None:
    """A shared student distribution (one logit vector for all N rows) trained by GD on
    each objective: the loss falls and KL(teacher || student) falls (for top-k with
    renormalisation, KL between the top-k-renormalised teacher and student falls)."""
    n, hidden = 2000, 5
    r = np.random.default_rng(4)
    t_logits_V = jnp.asarray(1.5 * r.standard_normal(V), jnp.float32)
    t_logits = jnp.broadcast_to(t_logits_V, (n, V))
    labels = jax.random.categorical(jax.random.key(5), t_logits)
    lp, idx = ob.teacher_topk(t_logits, 4)
    s_hidden = jnp.asarray(r.standard_normal((n, hidden)), jnp.float32)
    t_hidden = s_hidden @ jnp.asarray(r.standard_normal((hidden, 4)), jnp.float32) + 0.5
    teacher = ob.Teacher(labels, t_logits, lp, idx, t_hidden)
    hp = ob.LossHParams(alpha=0.2, tau=2.0, beta=0.5, gamma=1.0)
    init = {"logits": jnp.asarray(1.5 * r.standard_normal(V), jnp.float32),
            "proj": ob.init_projection(jax.random.key(6), hidden, 4)}
    log_t = jax.nn.log_softmax(t_logits_V)
    top = np.asarray(idx[0])

    def distances(params: dict) -> tuple[jax.Array, jax.Array]:
        log_s = jax.nn.log_softmax(params["logits"])
        renorm = lambda x: jax.nn.log_softmax(x[top])  # noqa: E731
        return ob.kl(log_t, log_s), ob.kl(renorm(log_t), renorm(log_s))

    @jax.jit
    def run() -> dict:
        out = {}
        for name, fn in ob.OBJECTIVES.items():
            def loss(params: dict) -> jax.Array:
                student = ob.Student(jnp.broadcast_to(params["logits"], (n, V)), s_hidden,
                                     params["proj"])
                return fn(student, teacher, hp, None)

            def step(params: dict, _: None) -> tuple[dict, jax.Array]:
                value, g = jax.value_and_grad(loss)(params)
                return jax.tree_util.tree_map(lambda p, d: p - 0.3 * d, params, g), value

            final, losses = jax.lax.scan(step, init, None, length=300)
            out[name] = (losses[0], loss(final), distances(init), distances(final))
        return out

    for name, (loss0, loss1, (kl0, rkl0), (kl1, rkl1)) in run().items():
        assert float(loss1) < 0.5 * float(loss0), (name, loss0, loss1)
        if name == "topk":
            assert float(rkl1) < 0.1 * float(rkl0), (name, rkl0, rkl1)
        else:
            assert float(kl1) < 0.2 * float(kl0), (name, kl0, kl1)


def test_extreme_ratios_accurate() -> None:
    """Large log-ratios (P/Q ~ e^60) and tiny beta: float32 results match float64 (this
    catches log1p(u) at u ~ -1 and 1 - beta rounding to 1)."""
    r = np.random.default_rng(7)
    t = (20 * r.standard_normal((16, V))).astype(np.float32)
    s = (20 * r.standard_normal((16, V))).astype(np.float32)
    lp, lq = _log_softmax64(t), _log_softmax64(s)
    np.testing.assert_allclose(ob.kl(jax.nn.log_softmax(t), jax.nn.log_softmax(s)),
                               _kl64(lp, lq), rtol=1e-5)
    fn = jax.jit(ob.jsd)
    for beta in (1e-8, 1e-6, 1e-3, 0.5, 1 - 2**-10):
        b32 = float(np.float32(beta))
        np.testing.assert_allclose(fn(s, t, beta), _jsd64(lp, lq, b32).mean(), rtol=1e-5)
