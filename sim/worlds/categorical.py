"""The unigram language model: a categorical distribution refitted on its own tokens.

Real data are tokens drawn from the Zipf law over V = ``vocab_size`` tokens,

    q_r = r^-s / sum_{j=1..V} j^-s,   r = 1..V,   token id r - 1  (token 0 most frequent),

with s = ``zipf_exponent`` (``sim.worlds.markov_lm.zipf``). The model is the maximum-
likelihood categorical of its weighted training tokens, add-alpha smoothed with alpha =
``smoothing`` (0 = the plain frequencies):

    p_i = (c_i + alpha) / (sum_j c_j + alpha V),   c_i = weighted count of token i.

There is nothing to train: the counts are sufficient statistics, so under
``mix=accumulate`` the chain keeps their running sum. A model produces ``n_samples`` tokens
through the same ``sampling.*`` settings as the LM worlds: temperature, top-k, top-p and
min-p act on the model's log-probabilities log p (``-inf`` for tokens of probability 0,
which are never produced), and tokens are drawn by inverting the CDF of the resulting
distribution (``sample_tokens``: one uniform and a binary search per token).

Closed forms the tests check (``tests/test_categorical.py``), with n tokens a generation,
``mix=replace`` and smoothing 0:

- Temperature 1 is neutral Wright-Fisher drift: n p_g ~ Multinomial(n, p_{g-1}), so
  E[p_g] = q (a martingale) and the heterozygosity H(p) = 1 - sum_i p_i^2 decays as
  E[H(p_g)] = (1 - 1/n)^(g+1) H(q) (generation 0 is already one multinomial draw from q).
  Tokens are lost and never come back: the support only shrinks.
- Temperature T: n p_g ~ Multinomial(n, r) with r proportional to p_{g-1}^(1/T), exactly;
  on an infinite sample p_g is proportional to q^(1/T^g): below T = 1 the tail vanishes
  geometrically in the exponent, above it the law flattens towards uniform.
- Top-k: after one generation at most k tokens have probability > 0; greedy
  (temperature 0): exactly one, the previous model's argmax.

``kl_to_truth`` = KL(q || p) is +inf as soon as the model gives probability 0 to a token
(the truth has full support): with smoothing 0 that happens whenever a token is missing
from the n training tokens (at V = 100, n = 1000, s = 1, generation 0 already misses about
4.2 of the 100 tokens on average). ``kl_from_truth`` = KL(p || q) stays finite and is the headline.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np

from sim import sampling as decode
from sim.distill import (DistillConfig, SamplingConfig, StudentConfig, TrainConfig,
                         decoding)
from sim.errors import require
from sim.metrics.distributions import entropy
from sim.worlds.base import Array, Dyn, MetricInfo, Params, WorldConfig
from sim.worlds.markov_lm import zipf


@dataclass(frozen=True)
class CategoricalConfig(WorldConfig):
    n_samples: int = 1000  # tokens per generation (and real tokens at generation 0)
    vocab_size: int = 100  # V
    zipf_exponent: float = 1.0  # s: true token probabilities proportional to rank^-s
    smoothing: float = 0.0  # alpha: add-alpha smoothing of the fitted counts (0 = ML)
    tail_rank: int = 0  # tail_mass: tokens beyond this true-frequency rank (0 = V // 2)
    token_probability: bool = True  # record every token's probability (G+1 x lanes x V)


def token_counts(tokens_N: Array, weights_N: Array, vocab: int) -> Array:
    """c_V: the weighted count of every token (float32)."""
    return jnp.zeros(vocab, jnp.float32).at[tokens_N].add(weights_N.astype(jnp.float32))


def fit_counts(counts_V: Array, smoothing: float) -> Array:
    """p_V = (c + alpha) / (sum c + alpha V): the add-alpha smoothed ML categorical."""
    smoothed_V = counts_V + smoothing
    return smoothed_V / smoothed_V.sum()


def sample_tokens(key: Array, p_V: Array, n: int) -> Array:
    """n int32 tokens drawn from p_V (not necessarily normalised) by inverting its CDF: the
    first token whose cumulative probability exceeds u * total, u ~ U[0, 1). A token of
    probability 0 is never drawn (its cumulative value equals its predecessor's), and the
    first token to reach the total catches u * total even where rounding makes it equal
    the total. O(V + n log V); float32 resolution as ``sim.sampling.sample``."""
    cdf_V = jnp.cumsum(p_V)
    total = cdf_V[-1]
    cdf_V = jnp.where(cdf_V >= total, jnp.inf, cdf_V)
    u_N = jax.random.uniform(key, (n,)) * total
    # an unrolled binary search measured 1.4x faster than the default scan on CPU
    return jnp.searchsorted(cdf_V, u_N, side="right", method="scan_unrolled").astype(jnp.int32)


def kl(p_V: Array, log_p_V: Array, log_q_V: Array) -> Array:
    """KL(p || q) = sum_{p_i > 0} p_i (log p_i - log q_i): +inf where q_i = 0 < p_i."""
    return jnp.sum(jnp.where(p_V > 0, p_V * (log_p_V - log_q_V), 0.0))


def check_untrained(distill: DistillConfig, student: StudentConfig) -> None:
    """The categorical world fits counts: only the default distill.* and student.*
    (train.* is unused, as in the closed-form worlds; sampling.* applies)."""
    for group, cfg in (("distill", distill), ("student", student)):
        default = type(cfg)()
        for f in fields(cfg):
            value, allowed = getattr(cfg, f.name), getattr(default, f.name)
            shown = getattr(allowed, "value", allowed)
            require(value == allowed, f"{group}.{f.name}", value,
                    f"only the default {shown!r} in the categorical world, whose model is "
                    "the maximum-likelihood categorical of its tokens (sampling.* applies)")


class CategoricalWorld:
    """Real data: Zipf tokens; model: the (smoothed) ML categorical p_V of its tokens."""

    # lax.map over vmapped batches of 250 lanes: 10,000 lanes x 20 generations took 13.6 s
    # of CPU against 18.5 s as one wide vmap (whose 40 MB buffers per generation cost
    # 4.8 s of page faults), on 2 shared CPU cores
    cpu_lane_batch = 250
    retention_of = None
    headline = ("kl_from_truth", "entropy", "support_size", "tail_mass")

    def __init__(self, cfg: CategoricalConfig, distill: DistillConfig,
                 sampling: SamplingConfig, train: TrainConfig, student: StudentConfig):
        del train  # unused: nothing is trained
        v = cfg.vocab_size
        require(v >= 2, "world.vocab_size", v, "an integer >= 2")
        require(cfg.n_samples >= 1, "world.n_samples", cfg.n_samples, "an integer >= 1")
        require(cfg.zipf_exponent >= 0, "world.zipf_exponent", cfg.zipf_exponent,
                "a float >= 0 (0 = uniform token probabilities)")
        require(cfg.smoothing >= 0, "world.smoothing", cfg.smoothing,
                "a float >= 0 (0 = the maximum-likelihood frequencies)")
        require(0 <= cfg.tail_rank < v, "world.tail_rank", cfg.tail_rank,
                f"an integer in [1, world.vocab_size={v}), or 0 (= half of them)")
        check_untrained(distill, student)
        self.cfg, self.sampling = cfg, sampling
        self.n_samples, self.min_rows, self.vocab = cfg.n_samples, 1, v
        q = zipf(v, cfg.zipf_exponent)
        self.q_V = jnp.asarray(q, jnp.float32)
        self.log_q_V = jnp.asarray(np.log(q), jnp.float32)
        self.tail_rank = cfg.tail_rank or v // 2
        true_tail = float(q[self.tail_rank:].sum())
        true_entropy = float(-(q * np.log(q)).sum())
        self.metric_info = {
            "kl_to_truth": MetricInfo(
                "KL divergence of the model from the true law", "nats",
                "KL(q || p) = sum_i q_i log(q_i / p_i), q the Zipf law; +inf once the model "
                "gives probability 0 to a token (with world.smoothing=0: any token missing "
                "from its training tokens); 0 for the true law"),
            "kl_from_truth": MetricInfo(
                "KL divergence of the true law from the model", "nats",
                "KL(p || q) = sum_i p_i log(p_i / q_i), q the Zipf law; finite, 0 for the "
                "true law"),
            "entropy": MetricInfo(
                "entropy of the model", "nats",
                f"-sum_i p_i log p_i of the fitted categorical (temperature 1; true law: "
                f"{true_entropy:.4f}, uniform: log V = {np.log(v):.4f})"),
            "support_size": MetricInfo(
                "tokens with non-zero probability", "",
                f"number of tokens i with p_i > 0 (of world.vocab_size={v})"),
            "tail_mass": MetricInfo(
                "model mass on the tail of the true frequency order", "",
                f"sum of p_i over the tokens beyond rank {self.tail_rank} of the true Zipf "
                f"order (true law: {true_tail:.4f})"),
        }
        if cfg.token_probability:
            self.metric_info["token_probability"] = MetricInfo(
                "probability of every token", "",
                "p_i of the fitted categorical, dim token = token id (0 = most frequent in "
                "the true law)", dims=("token",), coords=(tuple(range(v)),))

    def sample_real(self, key: Array, n: int) -> Array:
        # the barrier keeps XLA from constant-folding the search's first steps over the
        # constant truth into arrays of every lane's n tokens (seconds of compiling)
        return sample_tokens(key, jax.lax.optimization_barrier(self.q_V), n)

    def fit(self, key: Array, data: Array, weights_N: Array, dyn: Dyn,
            teacher: Params = None) -> Array:
        del key, dyn, teacher
        return self.fit_statistics(self.statistics(data, weights_N))

    def statistics(self, data: Array, weights_N: Array) -> Array:
        """The weighted token counts (additive: an accumulating chain sums them)."""
        return token_counts(data, weights_N, self.vocab)

    def fit_statistics(self, counts_V: Array) -> Array:
        """``fit`` from the summed counts of its data."""
        return fit_counts(counts_V, self.cfg.smoothing)

    def truth_log_likelihood(self, tokens_N: Array) -> Array:
        """log q of every token under the Zipf law (the curation's verifier)."""
        return self.log_q_V[tokens_N]

    def log_likelihood(self, p_V: Array, tokens_N: Array) -> Array:
        """log p of every token under a fitted model (temperature 1; -inf where p = 0)."""
        return jnp.log(p_V)[tokens_N]

    def sampling_distribution(self, p_V: Array, dyn: Dyn | None) -> Array:
        """The distribution a model produces tokens from at the lane's sampling settings."""
        return decode.probabilities(jnp.log(p_V), **decoding(self.sampling, dyn))

    def generate(self, key: Array, params: Array, n: int, dyn: Dyn) -> Array:
        return sample_tokens(key, self.sampling_distribution(params, dyn), n)

    def measure(self, key: Array, params: Array, teacher: Params = None,
                dyn: Dyn | None = None) -> dict[str, Array]:
        del key, teacher, dyn
        p_V = params
        log_p_V = jnp.log(p_V)
        metrics = {
            "kl_to_truth": kl(self.q_V, self.log_q_V, log_p_V),
            "kl_from_truth": kl(p_V, log_p_V, self.log_q_V),
            "entropy": entropy(p_V),
            "support_size": jnp.sum(p_V > 0).astype(jnp.int32),
            "tail_mass": p_V[self.tail_rank:].sum(),
        }
        if self.cfg.token_probability:
            metrics["token_probability"] = p_V
        return metrics
