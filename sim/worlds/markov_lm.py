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

Lanes on one CPU: vmap vs lax.map batches, see ``LMWorld.cpu_lane_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sim import objectives
from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
from sim.errors import require
from sim.worlds.base import Array, MetricInfo
from sim.metrics.distributions import empirical, tail_mass
from sim.worlds.lm import LMConfig, LMWorld, lm_metric_info


@dataclass(frozen=True)
class MarkovLMConfig(LMConfig):
    vocab_size: int = 32  # V
    zipf_exponent: float = 1.0  # s: stationary token frequencies proportional to rank^-s
    branching: int = 4  # random successors per token in the sparse component
    dense_mix: float = 0.1  # weight of the Zipf marginal in the transitions (> 0: ergodic)
    tail_rank: int = 0  # tail_mass counts tokens beyond this frequency rank (0 = V // 2)
    truth_seed: int = 0  # draws the transition matrix and the held-out sequences


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


def sample_chain(rng: np.random.Generator, pi_V: np.ndarray, p_VxV: np.ndarray, n: int,
                 length: int) -> np.ndarray:
    """n stationary sequences of ``length`` tokens, int32 (numpy; for fixed eval sets)."""
    cum_pi, cum_p = np.cumsum(pi_V), np.cumsum(p_VxV, axis=1)
    tokens = np.empty((n, length), np.int32)
    tokens[:, 0] = np.minimum(np.searchsorted(cum_pi, rng.random(n), side="right"),
                              len(pi_V) - 1)
    for t in range(1, length):
        u = rng.random(n)
        rows = cum_p[tokens[:, t - 1]]
        tokens[:, t] = np.minimum((rows <= u[:, None]).sum(1), len(pi_V) - 1)
    return tokens


class MarkovLMWorld(LMWorld):
    """Real data: stationary sequences of the Zipf Markov chain; model: a transformer LM."""

    def __init__(self, cfg: MarkovLMConfig, distill: DistillConfig, sampling: SamplingConfig,
                 train: TrainConfig, student: StudentConfig):
        v = cfg.vocab_size
        require(v >= 2, "world.vocab_size", v, "an integer >= 2")
        require(cfg.zipf_exponent >= 0, "world.zipf_exponent", cfg.zipf_exponent,
                "a float >= 0 (0 = uniform token frequencies)")
        require(1 <= cfg.branching <= v, "world.branching", cfg.branching,
                f"an integer in [1, world.vocab_size={v}]")
        require(0 < cfg.dense_mix <= 1, "world.dense_mix", cfg.dense_mix,
                "a float in (0, 1] (the chain must be ergodic)")
        require(0 <= cfg.tail_rank < v, "world.tail_rank", cfg.tail_rank,
                f"an integer in [1, world.vocab_size={v}), or 0 (= vocab_size // 2)")
        super().__init__("markov_lm", cfg, v, distill, sampling, train, student)
        self.pi_V, self.p_VxV = markov_truth(v, cfg.zipf_exponent, cfg.branching,
                                             cfg.dense_mix, cfg.truth_seed)
        self.eval_ExL = jnp.asarray(sample_chain(np.random.default_rng([cfg.truth_seed, 1]),
                                                 self.pi_V, self.p_VxV, cfg.eval_sequences,
                                                 cfg.seq_len))
        self.tail_rank = cfg.tail_rank or v // 2
        self.log_pi_V = jnp.asarray(np.log(self.pi_V), jnp.float32)
        self.log_p_VxV = jnp.asarray(np.log(self.p_VxV), jnp.float32)
        self.true_logp_ExLxV = self.true_logprobs(self.eval_ExL)
        self.entropy_rate = entropy_rate(self.pi_V, self.p_VxV)
        self.true_tail_mass = float(self.pi_V[self.tail_rank:].sum())
        truth = np.exp(np.asarray(self.true_logp_ExLxV, np.float64))
        self.true_entropy = float(-np.mean(np.sum(truth * np.log(truth), -1)))
        self.metric_info = lm_metric_info({
            "kl_to_truth": MetricInfo(
                "KL divergence from the true next-token distributions", "nats/token",
                "mean over held-out real positions of KL(true P(. | x_{t-1}) || q(. | x_<t)) "
                "(pi at t = 0); exact given the held-out sequences, 0 for the true chain"),
            "rank_frequency": MetricInfo(
                "token frequency by true rank in produced text", "",
                "relative frequency in the produced sample of the token of each rank of the "
                "true Zipf order (rank 1 = most frequent)", dims=("rank",),
                coords=(tuple(range(1, v + 1)),)),
            "tail_mass": MetricInfo(
                "next-token mass on the tail of the true frequency order", "",
                f"mean over held-out real positions of q's mass on the tokens beyond rank "
                f"{self.tail_rank} of the Zipf order (true chain: marginal "
                f"{self.true_tail_mass:.4f})"),
        })
        self.metric_info["model_entropy"] = self.metric_info["model_entropy"]._replace(
            description=self.metric_info["model_entropy"].description
            + f" (true chain on these positions: {self.true_entropy:.4f}; entropy rate "
            f"{self.entropy_rate:.4f})")
        self.headline = ("kl_to_truth", "model_entropy", "tail_mass", "entropy")
        self.support_V = jnp.ones(v, bool)  # every token has positive stationary mass

    def true_logprobs(self, tokens_BxL: Array) -> Array:
        """The true next-token log-probabilities ``B x L x V`` at every position."""
        first_Bx1xV = jnp.broadcast_to(self.log_pi_V, tokens_BxL.shape[:-1] + (1, self.vocab))
        return jnp.concatenate([first_Bx1xV, self.log_p_VxV[tokens_BxL[..., :-1]]], axis=-2)

    def sample_real(self, key: Array, n: int) -> Array:
        k_first, k_rest = jax.random.split(key)
        first_N = jax.random.categorical(k_first, self.log_pi_V, shape=(n,)).astype(jnp.int32)

        def step(prev_N: Array, k: Array) -> tuple[Array, Array]:
            next_N = jax.random.categorical(k, self.log_p_VxV[prev_N]).astype(jnp.int32)
            return next_N, next_N

        _, rest_TxN = jax.lax.scan(step, first_N, jax.random.split(k_rest, self.seq_len - 1))
        return jnp.concatenate([first_N[:, None], rest_TxN.T], axis=1)

    def sample_metrics(self, tokens_NxL: Array) -> dict[str, Array]:
        # token index = rank - 1: pi is sorted by decreasing Zipf frequency
        return {**super().sample_metrics(tokens_NxL),
                "rank_frequency": empirical(tokens_NxL, self.vocab)}

    def truth_metrics(self, logp_ExLxV: Array) -> dict[str, Array]:
        return {
            "kl_to_truth": jnp.mean(objectives.kl(self.true_logp_ExLxV, logp_ExLxV)),
            # token index = rank - 1: pi is sorted by decreasing Zipf frequency
            "tail_mass": jnp.mean(tail_mass(jnp.exp(logp_ExLxV), jnp.arange(self.vocab),
                                            self.tail_rank)),
        }
