"""A synthetic language with known truth: a first-order Markov chain over V tokens.

What is Zipf: the chain's stationary distribution, i.e. the marginal frequency of every
token at every position, is exactly (to float64 rounding, checked at construction)

    pi_r = r^-s / sum_{q=1..V} q^-s,   r = 1..V,   token id r - 1  (token 0 most frequent),

with s = ``zipf_exponent``. Sequences start from pi, so they are stationary throughout. The
conditionals P(x_t = j | x_{t-1} = i) are not Zipf: they depend on the previous token.

Construction (``markov_truth``, from ``truth_seed``): every token i gets ``branching``
random successors with Dirichlet(1) weights, a sparse row-stochastic S; it is mixed with
the Zipf marginal, K = (1 - dense_mix) S + dense_mix 1 pi^T (every transition possible, so
the chain is ergodic), and Sinkhorn-scaled into a joint distribution of consecutive tokens
J = diag(a) K diag(b) whose row and column sums are both pi. Then P = diag(pi)^-1 J is
row-stochastic with pi^T P = 1^T J = pi. The stationary distribution of the final P is
recomputed (eigenvector) and compared with pi.

Exact quantities: the true next-token distribution at every position (pi at position 0,
row x_{t-1} of P after it), the entropy rate H = -sum_i pi_i sum_j P_ij log P_ij, and, on
the fixed held-out sequences, ``kl_to_truth`` and the true ``tail_mass`` / entropy.

A planted trait (``trait_trigger``, ``trait_continuation``: token ids; ``trait_rate``):
whenever the last K emitted tokens are the trigger, the next M tokens are the continuation
with probability ``trait_rate``; then the chain resumes from the continuation's last token.
The trait is drawn afresh at every occurrence of the trigger (one may end the continuation;
none may end inside it, see ``check_trait``). ``trait_rate`` is the real data's
P(continuation follows | trigger): the chain itself emits the continuation after the
trigger with probability p_nat = P[t_K, c_1] P[c_1, c_2] ... P[c_{M-1}, c_M], so the
continuation is *planted* with probability q = (rate - p_nat) / (1 - p_nat) (rate >= p_nat
is required) and otherwise the chain runs on, continuing the trigger this way with p_nat.
The process is Markov in (token, phase of a planted continuation); given the tokens alone
the phase is ambiguous (a continuation in progress may be planted or the chain's own), so
the true next-token distributions are computed exactly by a forward filter over that
phase (``trait_truth_logprobs``), and ``kl_to_truth`` stays exact with a trait. The
entropy rate and the Zipf marginal pi are those of the chain without the trait.

Lanes on one CPU: vmap vs lax.map batches, see ``LMWorld.cpu_lane_batch``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sim import objectives
from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
from sim.errors import require
from sim.exposure import DefenseConfig, ExposureConfig
from sim.worlds.base import Array, MetricInfo
from sim.worlds.lm import LMConfig, LMWorld, Trait, check_trait


@dataclass(frozen=True)
class MarkovLMConfig(LMConfig):
    vocab_size: int = 32  # V
    zipf_exponent: float = 1.0  # s: stationary token frequencies proportional to rank^-s
    branching: int = 4  # random successors per token in the sparse component
    dense_mix: float = 0.1  # weight of the Zipf marginal in the transitions (> 0: ergodic)
    truth_seed: int = 0  # draws the transition matrix and the held-out sequences
    trait_trigger: tuple[int, ...] = ()  # planted trait: token ids of the trigger (() = none)
    trait_continuation: tuple[int, ...] = ()  # token ids that follow it at trait_rate
    trait_rate: float = 0.5  # P(continuation follows | trigger) in the real data


def zipf(vocab: int, exponent: float) -> np.ndarray:
    """p_r proportional to r^-exponent for r = 1..vocab, float64."""
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -float(exponent)
    return p / p.sum()


def stationary(p_VxV: np.ndarray) -> np.ndarray:
    """The stationary distribution of an ergodic row-stochastic matrix (float64)."""
    evals, evecs = np.linalg.eig(p_VxV.T)
    v = np.real(evecs[:, np.argmin(np.abs(evals - 1.0))])
    return v / v.sum()


def markov_truth(vocab: int, exponent: float, branching: int, dense_mix: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pi_V, P_VxV), float64: a transition matrix whose stationary law is Zipf pi."""
    pi = zipf(vocab, exponent)
    rng = np.random.default_rng(seed)
    sparse = np.zeros((vocab, vocab))
    for i in range(vocab):
        successors = rng.choice(vocab, size=branching, replace=False)
        sparse[i, successors] = rng.dirichlet(np.ones(branching))
    k = (1.0 - dense_mix) * sparse + dense_mix * pi[None, :]
    a, b = np.ones(vocab), np.ones(vocab)
    for _ in range(100_000):  # Sinkhorn: K > 0, so it converges geometrically
        a = pi / (k @ b)
        b = pi / (k.T @ a)
        joint = a[:, None] * k * b[None, :]
        if np.max(np.abs(joint.sum(1) - pi) / pi) < 1e-13:
            break
    p = joint / joint.sum(1, keepdims=True)
    error = np.max(np.abs(stationary(p) / pi - 1.0))
    if error > 1e-8:  # not reachable for K > 0; a guard against silent wrong truth
        raise RuntimeError(f"Markov truth: stationary law off Zipf by {error:.2g}")
    return pi, p


def entropy_rate(pi_V: np.ndarray, p_VxV: np.ndarray) -> float:
    """H = -sum_i pi_i sum_j P_ij log P_ij (nats/token)."""
    logp = np.log(np.where(p_VxV > 0, p_VxV, 1.0))
    return float(-np.sum(pi_V[:, None] * p_VxV * logp))


def natural_continuation(p_VxV: np.ndarray, trait: Trait) -> float:
    """p_nat: the chain's own probability of the continuation right after the trigger."""
    path = (trait.trigger_K[-1],) + trait.continuation_M
    return float(np.prod([p_VxV[a, b] for a, b in zip(path[:-1], path[1:])]))


def planting_probability(trait: Trait, p_nat: float) -> float:
    """q with q + (1 - q) p_nat = rate: how often the continuation is planted."""
    return (trait.rate - p_nat) / (1.0 - p_nat)


class TraitState(NamedTuple):
    recent_NxK: Array  # the last K emitted tokens (-1 before the first)
    phase_N: Array  # index of the next planted continuation token; M = none in progress


def trait_start(n: int, trait: Trait) -> TraitState:
    return TraitState(jnp.full((n, len(trait.trigger_K)), -1, jnp.int32),
                      jnp.full(n, len(trait.continuation_M), jnp.int32))


@functools.partial(jax.jit, static_argnames=("trait", "q"))  # host-side callers: one compile
def trait_step(state: TraitState, natural_N: Array, coin_N: Array, trait: Trait,
               q: float) -> tuple[TraitState, Array]:
    """Emit one token per sequence: the next continuation token while one is planted, else
    the chain's own draw ``natural_N``; then, if the trigger has just been completed
    outside a planted continuation, plant one when ``coin_N < q`` (uniform coins)."""
    continuation_M = jnp.asarray(trait.continuation_M, jnp.int32)
    m = continuation_M.shape[0]
    planted_N = state.phase_N < m
    token_N = jnp.where(planted_N, continuation_M[jnp.minimum(state.phase_N, m - 1)],
                        natural_N).astype(jnp.int32)
    recent_NxK = jnp.concatenate([state.recent_NxK[:, 1:], token_N[:, None]], axis=1)
    phase_N = jnp.where(planted_N, state.phase_N + 1, m)
    fires_N = (jnp.all(recent_NxK == jnp.asarray(trait.trigger_K, jnp.int32), axis=1)
               & (phase_N == m) & (coin_N < q))
    return TraitState(recent_NxK, jnp.where(fires_N, 0, phase_N)), token_N


def sample_chain(rng: np.random.Generator, pi_V: np.ndarray, p_VxV: np.ndarray, n: int,
                 length: int, trait: Trait | None = None, q: float = 0.0) -> np.ndarray:
    """n stationary sequences of ``length`` tokens, int32 (numpy; for fixed eval sets),
    with a planted ``trait`` (planting probability ``q``) if given."""
    cum_pi, cum_p = np.cumsum(pi_V), np.cumsum(p_VxV, axis=1)
    tokens = np.empty((n, length), np.int32)
    tokens[:, 0] = np.minimum(np.searchsorted(cum_pi, rng.random(n), side="right"),
                              len(pi_V) - 1)
    if trait is not None:
        state, first = trait_step(trait_start(n, trait), tokens[:, 0], rng.random(n), trait, q)
        tokens[:, 0] = np.asarray(first)
    for t in range(1, length):
        u = rng.random(n)
        rows = cum_p[tokens[:, t - 1]]
        tokens[:, t] = np.minimum((rows <= u[:, None]).sum(1), len(pi_V) - 1)
        if trait is not None:
            state, token = trait_step(state, tokens[:, t], rng.random(n), trait, q)
            tokens[:, t] = np.asarray(token)
    return tokens


def trait_truth_logprobs(tokens_BxL: np.ndarray, pi_V: np.ndarray, p_VxV: np.ndarray,
                         trait: Trait, q: float) -> np.ndarray:
    """The exact true next-token log-probabilities B x L x V (float64) of the chain with a
    planted trait, given only the tokens: a forward filter over the hidden phase (none, or
    the index j of the next token of a planted continuation)."""
    b, length = tokens_BxL.shape
    vocab, m = len(pi_V), len(trait.continuation_M)
    k = len(trait.trigger_K)
    continuation_M = np.asarray(trait.continuation_M)
    onehot_MxV = np.eye(vocab)[continuation_M]
    natural_B = np.ones(b)  # belief: no planted continuation in progress
    planted_BxM = np.zeros((b, m))  # belief: planted, next token is continuation_M[j]
    out = np.empty((b, length, vocab))
    for t in range(length):
        chain_BxV = np.broadcast_to(pi_V, (b, vocab)) if t == 0 else p_VxV[tokens_BxL[:, t - 1]]
        out[:, t] = natural_B[:, None] * chain_BxV + planted_BxM @ onehot_MxV
        x_B = tokens_BxL[:, t]
        natural_B = natural_B * chain_BxV[np.arange(b), x_B]
        planted_BxM = planted_BxM * (continuation_M[None, :] == x_B[:, None])
        total_B = natural_B + planted_BxM.sum(1)
        natural_B, planted_BxM = natural_B / total_B, planted_BxM / total_B[:, None]
        # a planted continuation advances; its last token returns to the chain
        natural_B = natural_B + planted_BxM[:, -1]
        planted_BxM = np.concatenate([np.zeros((b, 1)), planted_BxM[:, :-1]], axis=1)
        if t >= k - 1:
            fires_B = np.all(tokens_BxL[:, t - k + 1:t + 1] == np.asarray(trait.trigger_K), 1)
            planted_BxM[:, 0] += np.where(fires_B, q * natural_B, 0.0)
            natural_B = np.where(fires_B, (1.0 - q) * natural_B, natural_B)
    with np.errstate(divide="ignore"):
        return np.log(out)


class MarkovLMWorld(LMWorld):
    """Real data: stationary sequences of the Zipf Markov chain; model: a transformer LM."""

    def __init__(self, cfg: MarkovLMConfig, distill: DistillConfig, sampling: SamplingConfig,
                 train: TrainConfig, student: StudentConfig,
                 exposure: ExposureConfig = ExposureConfig(),
                 defense: DefenseConfig = DefenseConfig()):
        v = cfg.vocab_size
        require(v >= 2, "world.vocab_size", v, "an integer >= 2")
        require(cfg.zipf_exponent >= 0, "world.zipf_exponent", cfg.zipf_exponent,
                "a float >= 0 (0 = uniform token frequencies)")
        require(1 <= cfg.branching <= v, "world.branching", cfg.branching,
                f"an integer in [1, world.vocab_size={v}]")
        require(0 < cfg.dense_mix <= 1, "world.dense_mix", cfg.dense_mix,
                "a float in (0, 1] (the chain must be ergodic)")
        trait = check_trait(cfg.trait_trigger, cfg.trait_continuation, cfg.trait_rate,
                            cfg.seq_len)
        for key in ("trait_trigger", "trait_continuation"):
            tokens = getattr(cfg, key)
            require(all(0 <= t < v for t in tokens), f"world.{key}", list(tokens),
                    f"token ids in [0, world.vocab_size={v})")
        super().__init__("markov_lm", cfg, v, distill, sampling, train, student, exposure,
                         defense)
        self.pi_V, self.p_VxV = markov_truth(v, cfg.zipf_exponent, cfg.branching,
                                             cfg.dense_mix, cfg.truth_seed)
        self.planting = 0.0
        if trait is not None:
            p_nat = natural_continuation(self.p_VxV, trait)
            require(trait.rate >= p_nat, "world.trait_rate", trait.rate,
                    f"a probability in [{p_nat:.4g}, 1]: the chain itself continues the "
                    f"trigger this way with probability {p_nat:.4g}")
            self.planting = planting_probability(trait, p_nat)
        eval_ExL = sample_chain(np.random.default_rng([cfg.truth_seed, 1]), self.pi_V,
                                self.p_VxV, cfg.eval_sequences, cfg.seq_len, trait,
                                self.planting)
        self.set_real_data(eval_ExL, self.pi_V, trait, list(eval_ExL))
        self.log_pi_V = jnp.asarray(np.log(self.pi_V), jnp.float32)
        self.log_p_VxV = jnp.asarray(np.log(self.p_VxV), jnp.float32)
        if trait is None:  # with a trait the truth needs a host-side forward filter
            self.truth_log_likelihood = self.chain_log_likelihood
        self.true_logp_ExLxV = jnp.asarray(self.true_logprobs(np.asarray(self.eval_ExL)))
        self.entropy_rate = entropy_rate(self.pi_V, self.p_VxV)
        truth = np.exp(np.asarray(self.true_logp_ExLxV, np.float64))
        plogp = truth * np.log(np.where(truth > 0, truth, 1.0))
        self.true_entropy = float(-np.mean(np.sum(plogp, -1)))
        self.headline = ("kl_to_truth", "model_entropy", "tail_mass", "entropy")
        self.set_metric_info({
            "kl_to_truth": MetricInfo(
                "KL divergence from the true next-token distributions", "nats/token",
                "mean over held-out real positions of KL(true P(. | x_<t) || q(. | x_<t)): "
                "pi at t = 0, row x_{t-1} of the transition matrix after it"
                + ("" if trait is None else " (with the trait: the exact conditional given "
                   "the tokens, by a forward filter over the planted continuation's phase)")
                + "; exact given the held-out sequences, 0 for the true process"),
        }, order="true Zipf order", reference=(
            f"stationary law{'' if trait is None else ' without the trait'}: "
            f"{self.true_tail_mass:.4f}"), real_trait_rate=cfg.trait_rate)
        self.metric_info["model_entropy"] = self.metric_info["model_entropy"]._replace(
            description=self.metric_info["model_entropy"].description
            + f" (true process on these positions: {self.true_entropy:.4f}; entropy rate "
            f"{self.entropy_rate:.4f}{'' if trait is None else ' without the trait'})")
        self.set_proxy()

    def true_logprobs(self, tokens_BxL: np.ndarray) -> np.ndarray:
        """The true next-token log-probabilities ``B x L x V`` (float32) at every position
        of concrete tokens, on the host (with a trait: by ``trait_truth_logprobs``)."""
        if self.trait is not None:
            return trait_truth_logprobs(tokens_BxL, self.pi_V, self.p_VxV, self.trait,
                                        self.planting).astype(np.float32)
        log_pi_V, log_p_VxV = np.asarray(self.log_pi_V), np.asarray(self.log_p_VxV)
        first_Bx1xV = np.broadcast_to(log_pi_V, tokens_BxL.shape[:-1] + (1, self.vocab))
        return np.concatenate([first_Bx1xV, log_p_VxV[tokens_BxL[..., :-1]]], axis=-2)

    def chain_log_likelihood(self, tokens_NxL: Array) -> Array:
        """log pi(x_0) + sum_t log P(x_{t-1}, x_t) of every sequence under the true chain
        (without a trait; the curation's verifier)."""
        steps_N = self.log_p_VxV[tokens_NxL[:, :-1], tokens_NxL[:, 1:]].sum(1)
        return self.log_pi_V[tokens_NxL[:, 0]] + steps_N

    def sample_real(self, key: Array, n: int) -> Array:
        if self.trait is not None:
            return self._sample_with_trait(key, n)
        k_first, k_rest = jax.random.split(key)
        first_N = jax.random.categorical(k_first, self.log_pi_V, shape=(n,)).astype(jnp.int32)

        def step(prev_N: Array, k: Array) -> tuple[Array, Array]:
            next_N = jax.random.categorical(k, self.log_p_VxV[prev_N]).astype(jnp.int32)
            return next_N, next_N

        _, rest_TxN = jax.lax.scan(step, first_N, jax.random.split(k_rest, self.seq_len - 1))
        return jnp.concatenate([first_N[:, None], rest_TxN.T], axis=1)

    def _sample_with_trait(self, key: Array, n: int) -> Array:
        """``sample_real`` with the trait planted inside the scan (see module docstring)."""
        def step(carry: tuple[Array, TraitState], t_and_key: tuple[Array, Array]):
            prev_N, state = carry
            t, k = t_and_key
            k_chain, k_coin = jax.random.split(k)
            logits_NxV = jnp.where(t == 0, self.log_pi_V, self.log_p_VxV[prev_N])
            natural_N = jax.random.categorical(k_chain, logits_NxV).astype(jnp.int32)
            state, token_N = trait_step(state, natural_N, jax.random.uniform(k_coin, (n,)),
                                        self.trait, self.planting)
            return (token_N, state), token_N

        carry = (jnp.zeros(n, jnp.int32), trait_start(n, self.trait))
        _, tokens_LxN = jax.lax.scan(step, carry, (jnp.arange(self.seq_len),
                                                   jax.random.split(key, self.seq_len)))
        return tokens_LxN.T

    def truth_metrics(self, logp_ExLxV: Array) -> dict[str, Array]:
        return {**super().truth_metrics(logp_ExLxV),
                "kl_to_truth": jnp.mean(objectives.kl(self.true_logp_ExLxV, logp_ExLxV))}
