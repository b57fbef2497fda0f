"""What the language-model worlds (``markov_lm``, ``text``) share.

Data are int32 token sequences ``tokens_NxL`` over V real tokens. The model is a causal
transformer (``sim.models.transformer``) with context L and one extra vocabulary entry,
BOS = V, that is only ever an input: position t reads ``[BOS, x_0, ..., x_{t-1}]`` and
predicts x_t. The output column of BOS is sliced off everywhere (training, sampling,
metrics), so every next-token distribution is over the V real tokens.

Each generation trains a fresh transformer (initialised from the fit key) for
``train.steps`` AdamW steps of ``train.batch_size`` sequences drawn from the pool's
weighted rows (``sim.train``; learning rate and weight decay are traced per lane, linear
warmup over ``train.warmup_steps``, then constant or, with ``train.cosine``, a cosine decay
to 0; gradients clipped to global norm 1):

* generation 0 (no teacher): the world's architecture, cross-entropy on real sequences;
* generation g >= 1: the student architecture (``student.width/layers/heads`` override the
  world's when non-zero) trained with ``distill.objective`` on the pool, whose synthetic
  rows are the teacher's sampled text. ``hard`` sees only that text; the other objectives
  also run the teacher on every training minibatch for its logits (``topk``: only its
  ``distill.top_k`` largest log-probabilities, the rest per ``distill.missing``;
  ``feature``: also its final hidden states, matched through a learned linear projection
  student width -> teacher width that trains jointly and is discarded afterwards).
  ``on_policy`` (GKD, Agarwal et al. 2024): at each step, with probability
  ``distill.on_policy_fraction`` the minibatch is replaced by sequences the current student
  samples (temperature 1, stop-gradient, KV cache); on either kind of batch the loss is the
  continuous JSD(``distill.beta``) between teacher and student next-token distributions.

Generation samples ``n`` sequences from BOS with the KV cache at the traced
``sampling.temperature/top_p/min_p`` and the static ``sampling.top_k``.

A fitted model is an ``LMParams``: the transformer weights, the architecture as static
pytree metadata (so a teacher of another size is recognised when the student trains, and
a smaller student simply retraces the compiled generation step once), and the training
FLOPs it cost. FLOPs use ``flops_per_token`` (forward: 2 x matmul weights + attention over
the full context): per trained token ``3 x forward`` of the student, plus one teacher
forward for objectives that query the teacher, plus the ``feature`` projection (3 x 2 x
Ds x Dt), plus, for ``on_policy``, ``on_policy_fraction`` x a student forward per token
for the sampled batches (its expected value; under ``vmap`` both branches are computed),
plus, where the teacher serves logits under ``defense=antidistillation``, the proxy pair's
two forwards per token. The teacher's sampling of the pool is ``sample_flops``
(``sim.chain``): ``tf.decode_flops`` per sequence (and the proxy pair's, decoding beside
it), plus one teacher-forced forward per sequence under ``filter=self_likelihood``.

Metrics are computed on a fixed set of held-out real sequences (``eval_sequences`` of
them): one forward pass of the model (and of the teacher, for ``agreement``), cheap next
to training. ``tail_mass`` and ``rank_frequency`` rank tokens by the true frequencies the
world gives (``set_real_data``: markov_lm's Zipf law, the text's byte counts); ``vendi``
uses exact bag-of-``vendi_ngram``-gram features and Renyi order ``vendi_q``. The
produced-text metrics use ``eval_sequences`` sequences sampled at the lane's settings.

A planted trait (``Trait``: a trigger n-gram that the continuation follows at ``rate`` in
the real data; each world plants it in its own way) adds ``trait_rate`` (the produced
sample's share of trigger occurrences followed by the continuation,
``sim.metrics.sequences.trait_rate``), ``trait_probability`` (the model's probability of
the whole continuation, teacher-forced after up to ``eval_sequences`` held-out real
contexts ending in the trigger: one more forward pass) and, after the run,
``trait_amplification`` = trait_rate_g / trait_rate_0.

Defenses. ``defense=watermark`` (``sim.watermark``) adds ``defense.delta`` to the logits of
the green list of the previous token wherever the teacher serves its student: the text
``generate`` samples for the pool and, for objectives that query the teacher, the logits
it exposes on the training minibatches (before ``sim.exposure.expose``).
``defense=antidistillation`` (``sim.antidistillation``) shifts the teacher's logits by
``defense.lam`` times the finite difference of a fixed proxy student (trained on real text
when the world is built): in the text ``generate`` samples (the proxy pair decoding beside
the teacher, the shift added after the temperature) and, teacher-forced at temperature 1,
in the logits it exposes. ``defense=logit_noise`` perturbs only the exposed
log-probabilities (``expose``). The strengths are the lane's traced values. The proxy
pair's passes are counted as the teacher's: in ``train_flops`` where the student queries
the served logits, in ``sample_flops`` where it samples.

The detector runs in every LM world, whatever the defense: it costs one scatter over the
produced sample, and with it every run has the same variables, so runs with and without a
watermark combine into one Dataset and the unwatermarked chains give the detector's null
distribution under the same key. It scores two samples each generation: the model's own
(``watermark_z``, ``watermark_p``: the sample of the produced-text metrics, drawn without
any watermark, so a score there is a watermark the model learnt from its teacher's text,
"radioactivity", Sander et al. 2024) and the first ``eval_sequences`` sequences its teacher
served as this generation's synthetic data (``teacher_watermark_z``, ``served_metrics``:
the text the student was taught with, scored at the same size as the student's, with no
extra sampling). The cost of a defense to the teacher is ``teacher_nll_real``, the
held-out NLL of the teacher's distribution as its defense serves it (over all V tokens,
whatever the exposure: logits + delta * green, the log-probabilities with one noise draw
per position, or logits + lam * Delta), and ``teacher_nll_cost``, its excess over the
teacher's undefended NLL. With ``defense.teachers = k > 0`` only the models of generations
0..k-1 defend when they teach (``LMParams.generation`` says which generation a model is),
so that a chain shows how a watermark fades once later distillers stop adding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from sim import antidistillation, objectives, sampling, watermark
from sim.distill import (DistillConfig, Objective, SamplingConfig, StudentConfig, TrainConfig,
                         decoding, loss_hparams, loss_name)
from sim.errors import require
from sim.exposure import Defense, DefenseConfig, ExposureConfig, expose, noisy, strength
from sim.metrics import classification, distributions, sequences, vendi
from sim.models import transformer as tf
from sim.train import final_loss, optimizer_for, train
from sim.worlds.base import (TRAIN_LOSS_INFO, Array, Dyn, MetricInfo, Relative, WorldConfig,
                             measure_untaught)

Weights = Any  # the transformer's parameter pytree


@dataclass(frozen=True)
class LMConfig(WorldConfig):
    """Fields both LM worlds have (architecture of the generation-0 model, data sizes)."""

    n_samples: int = 512  # sequences per generation (real sequences at generation 0)
    seq_len: int = 32  # L: tokens per sequence (the transformer's context)
    width: int = 64  # D
    layers: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    eval_sequences: int = 64  # held-out real sequences the metrics are computed on
    tail_rank: int = 0  # tail_mass: tokens beyond this true-frequency rank (0 = half the support)
    vendi_ngram: int = 1  # vendi: features are bag-of-n-gram counts of this order (1 = tokens)
    vendi_q: float = 1.0  # vendi: order q of the Renyi entropy (1 = Shannon; inf allowed)


@flax.struct.dataclass
class LMParams:
    """One trained LM: weights, its training cost, and (static) its architecture."""

    weights: Weights
    train_flops: Array  # float32 scalar
    cfg: tf.TransformerConfig = flax.struct.field(pytree_node=False)
    train_loss: Array = float("nan")  # final_loss of its training (NaN: not trained here)
    generation: Array = 0  # int32 scalar: the generation it was trained in (0: real data)


BASE_METRICS: dict[str, MetricInfo] = {
    "nll_real": MetricInfo(
        "negative log-likelihood of held-out real text", "nats/token",
        "mean over the held-out real sequences' positions of -log q(x_t | x_<t)"),
    "perplexity_real": MetricInfo(
        "perplexity of held-out real text", "", "exp(nll_real)"),
}
COMMON_METRICS: dict[str, MetricInfo] = {
    "agreement": MetricInfo(
        "top-1 agreement with the teacher", "",
        "share of held-out real positions where the model's and its teacher's most likely "
        "next tokens coincide (NaN at generation 0, which has no teacher)"),
    "kl_teacher_student": MetricInfo(
        "KL(teacher || student) on held-out real text", "nats/token",
        "mean over held-out real positions of KL(teacher(. | x_<t) || model(. | x_<t)) "
        "(NaN at generation 0)"),
    "model_entropy": MetricInfo(
        "entropy of the next-token distributions", "nats",
        "mean over held-out real positions of the entropy of q(. | x_<t)"),
    "entropy_rate": MetricInfo(
        "entropy rate of the model's own text", "nats/token",
        "mean over the positions of the produced sample of the entropy of the distribution "
        "each token is drawn from (the lane's sampling settings): H(X_1..X_L) / L of the "
        "text the model generates, exact given each context, averaged over its own "
        "eval_sequences samples (markov_lm: compare the true chain's entropy rate)"),
    "params": MetricInfo(
        "parameter count", "",
        "scalars in the transformer's weights (the unused BOS output column included)"),
    "train_flops": MetricInfo(
        "training FLOPs of this generation", "FLOP",
        "model FLOPs of training (3 x forward per trained token) plus the teacher forward "
        "passes the objective needs, the antidistillation proxy pair's with them (see "
        "sim/worlds/lm.py)"),
    "train_loss": TRAIN_LOSS_INFO,
}


NGRAM_ORDERS = (1, 2, 3, 4)
SELF_BLEU_SEQUENCES = 16  # self-BLEU costs O(N^2 L^2): measured on the first 16 sequences
SAMPLE_METRICS: dict[str, MetricInfo] = {
    "entropy": MetricInfo(
        "token entropy of produced text", "nats",
        "unigram entropy of eval_sequences sequences the model samples with the lane's "
        "sampling settings (the data it would teach with)"),
    "ngram_entropy": MetricInfo(
        "n-gram entropy of produced text", "nats",
        "entropy of the empirical within-sequence n-gram distribution of the produced "
        "sample", dims=("n",), coords=(NGRAM_ORDERS,)),
    "distinct_n": MetricInfo(
        "distinct n-grams of produced text", "",
        "distinct n-grams over all n-grams in the produced sample (Li et al. 2016)",
        dims=("n",), coords=(NGRAM_ORDERS,)),
    "self_bleu": MetricInfo(
        "self-BLEU of produced text", "",
        f"mean BLEU-4 of each of the first {SELF_BLEU_SEQUENCES} produced sequences against "
        "the others (Zhu et al. 2018); higher = less diverse"),
    "compression_ratio": MetricInfo(
        "gzip compression ratio of produced text", "",
        "raw bytes over gzip bytes of the produced token stream; higher = more repetitive"),
    "support_coverage": MetricInfo(
        "share of the true support produced", "",
        "share of the tokens of the real data's support that occur in the produced sample"),
}


def defense_info(defense: DefenseConfig, real_z: float) -> dict[str, MetricInfo]:
    """The watermark detector's and the defended teacher's metrics (see the module
    docstring); ``real_z``: the detector on the held-out real text."""
    lists = (f"the green lists of defense.key={defense.key} (gamma={defense.gamma:g}); "
             f"held-out real text: z = {real_z:.3g}")
    own = ("the produced sample (eval_sequences sequences the model samples with the lane's "
           "sampling settings, with no watermark of its own)")
    return {
        "watermark_z": MetricInfo(
            "watermark z-score of produced text", "",
            f"one-proportion z-score of the green share of the distinct (previous token, "
            f"token) pairs of {own}, against {lists} (sim/watermark.py); > 4: the model "
            "carries the watermark of the text it learnt from (radioactivity)"),
        "watermark_p": MetricInfo(
            "watermark p-value of produced text", "",
            "P(Z > watermark_z), Z standard normal: the detector's p-value"),
        "teacher_watermark_z": MetricInfo(
            "watermark z-score of the teacher's served text", "",
            f"watermark_z of the first eval_sequences sequences of the synthetic data the "
            f"teacher served this generation (with its defense), against {lists} (NaN at "
            f"generation 0)"),
        "teacher_nll_real": MetricInfo(
            "held-out NLL of the teacher's defended distribution", "nats/token",
            "mean over held-out real positions of -log q~(x_t | x_<t), q~ the teacher's "
            "next-token distribution as its defense serves it over all V tokens "
            "(watermark: logits + delta on the green list of x_{t-1}; logit_noise: one "
            "noise draw per position; antidistillation: logits + lam * Delta, the proxy's "
            "finite difference; none: the teacher's own) (NaN at generation 0)"),
        "teacher_nll_cost": MetricInfo(
            "cost of the defense to the teacher", "nats/token",
            "teacher_nll_real minus the teacher's undefended held-out NLL (its nll_real "
            "one generation earlier): the defender's loss (NaN at generation 0)"),
    }


def vendi_info(ngram: int, q: float) -> MetricInfo:
    features = "token" if ngram == 1 else f"{ngram}-gram"
    return MetricInfo(
        "Vendi score of produced text", "",
        "effective number of distinct sequences (Friedman & Dieng 2023): exp of the order-"
        f"{q:g} Renyi entropy of the eigenvalues of K / N, K the cosine similarity of the "
        f"sequences' exact bag-of-{features} count vectors (world.vendi_ngram, "
        "world.vendi_q); in [1, eval_sequences]")


def frequency_info(ranks: int, tail_rank: int, order: str, reference: str
                   ) -> dict[str, MetricInfo]:
    """``rank_frequency`` and ``tail_mass`` against a true token-frequency ``order``."""
    return {
        "rank_frequency": MetricInfo(
            "token frequency by true rank in produced text", "",
            f"relative frequency in the produced sample of the token of each rank of the "
            f"{order} (rank 1 = most frequent)", dims=("rank",),
            coords=(tuple(range(1, ranks + 1)),)),
        "tail_mass": MetricInfo(
            "next-token mass on the tail of the true frequency order", "",
            f"mean over held-out real positions of q's mass on the tokens beyond rank "
            f"{tail_rank} of the {order} ({reference})"),
    }


def trait_info(trait: "Trait", real_rate: float,
               shown: Callable[[tuple[int, ...]], Any] = list) -> dict[str, MetricInfo]:
    """``trait_rate`` and ``trait_probability`` of a planted trait (``shown``: tokens as
    configured)."""
    what = (f"the continuation {shown(trait.continuation_M)!r} follows the trigger "
            f"{shown(trait.trigger_K)!r} (world.trait_*; real data: {real_rate:.4g})")
    return {
        "trait_rate": MetricInfo(
            "rate of the planted trait in produced text", "",
            f"share of the trigger's occurrences in the produced sample (those with room for "
            f"the continuation in their sequence) that {what}; NaN when none occurs"),
        "trait_probability": MetricInfo(
            "model probability of the planted trait", "",
            f"mean over contexts ending in the trigger (from the held-out real text) of the "
            f"model's probability (temperature 1) that {what}"),
    }


TRAIT_AMPLIFICATION = MetricInfo(
    "amplification of the planted trait", "",
    "trait_rate_g / trait_rate_0: the produced trait rate relative to generation 0's "
    "(1 at generation 0; NaN where generation 0 produced no trigger or no trait)")


class Trait(NamedTuple):
    """A planted trait: in the real data the continuation follows the trigger at ``rate``."""

    trigger_K: tuple[int, ...]
    continuation_M: tuple[int, ...]
    rate: float


def trigger_ends(tokens_T: np.ndarray, trigger_K: tuple[int, ...]) -> np.ndarray:
    """Positions just after every (possibly overlapping) occurrence of the trigger in a
    1-D token array (numpy, host side)."""
    k = len(trigger_K)
    if len(tokens_T) < k:
        return np.zeros(0, np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(tokens_T), k)
    return np.flatnonzero(np.all(windows == np.asarray(trigger_K), axis=-1)) + k


def check_trait(trigger: tuple[int, ...], continuation: tuple[int, ...], rate: float,
                seq_len: int, shown: Callable[[tuple[int, ...]], Any] = list
                ) -> Trait | None:
    """One-line errors for a trait's settings (``shown`` turns tokens back into the
    configured value); None when no trait is configured."""
    require(0 <= rate <= 1, "world.trait_rate", rate, "a probability in [0, 1]")
    if not trigger:
        require(not continuation, "world.trait_trigger", shown(trigger),
                "non-empty when world.trait_continuation is set (or clear both)")
        return None
    require(bool(continuation), "world.trait_continuation", shown(continuation),
            "non-empty when world.trait_trigger is set")
    k, m = len(trigger), len(continuation)
    require(k + m <= seq_len, "world.trait_continuation", shown(continuation),
            f"with the trigger at most world.seq_len={seq_len} tokens long ({k} + {m})")
    # A trigger that ends inside the continuation, before its last token, would be followed
    # by the rest of the continuation rather than draw the trait afresh.
    inside = trigger_ends(np.asarray(trigger + continuation), trigger) - k
    inside = inside[(inside >= 1) & (inside < m)]
    require(inside.size == 0, "world.trait_continuation", shown(continuation),
            f"one inside which the trigger does not end (it ends at its token "
            f"{int(inside[0]) if inside.size else 0}, before the last)")
    return Trait(tuple(trigger), tuple(continuation), float(rate))


def trait_contexts(rows: list[np.ndarray], trait: Trait, length: int, count: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forcing inputs for ``trait_probability``: up to ``count`` sequences
    (C x length, int32) of real text ending with an occurrence of the trigger (its last
    length - M tokens at most), then the continuation, then padding; and the mask of the
    continuation's positions (C x length). Occurrences are taken evenly spaced over those
    of the ``rows`` (1-D token arrays); without any, the trigger alone (from BOS)."""
    m = len(trait.continuation_M)
    ends = [(r, int(e)) for r, row in enumerate(rows)
            for e in trigger_ends(row, trait.trigger_K)]
    if ends:
        picks = np.unique(np.round(np.linspace(0, len(ends) - 1, min(count, len(ends)))))
        prefixes = [rows[ends[i][0]][max(0, ends[i][1] - (length - m)):ends[i][1]]
                    for i in picks.astype(int)]
    else:
        prefixes = [np.asarray(trait.trigger_K)]
    contexts_CxL = np.zeros((len(prefixes), length), np.int32)
    mask_CxL = np.zeros((len(prefixes), length), bool)
    for c, prefix in enumerate(prefixes):
        contexts_CxL[c, :len(prefix)] = prefix
        contexts_CxL[c, len(prefix):len(prefix) + m] = trait.continuation_M
        mask_CxL[c, len(prefix):len(prefix) + m] = True
    return contexts_CxL, mask_CxL


# Metrics that ``measure`` returns as an intermediate (the produced tokens), finished per
# lane on the host after each generation: gzip has no XLA counterpart.
HOST_METRICS = {"compression_ratio": sequences.compression_ratio}


def lm_metric_info(extra: Mapping[str, MetricInfo], vendi: MetricInfo,
                   trait: Mapping[str, MetricInfo],
                   defense: Mapping[str, MetricInfo] = {}) -> dict[str, MetricInfo]:
    """The metrics of an LM world, in order: NLL, perplexity, ``extra``, the rest, the
    defense's, the trait's (if any)."""
    return {**BASE_METRICS, **extra, **COMMON_METRICS, **SAMPLE_METRICS, "vendi": vendi,
            **defense, **trait}


def sample_diversity(tokens_NxL: Array, support_V: Array, vendi_ngram: int = 1,
                     vendi_q: float = 1.0) -> dict[str, Array]:
    """The ``SAMPLE_METRICS`` and ``vendi`` of a sample of token sequences."""
    # one sort of the n-grams for each n, shared by the entropies and distinct-n
    counts = {n: sequences.ngram_counts(tokens_NxL, n) for n in {1, *NGRAM_ORDERS}}
    return {
        "entropy": sequences.entropy_of_counts(counts[1]),
        "ngram_entropy": jnp.stack([sequences.entropy_of_counts(counts[n])
                                    for n in NGRAM_ORDERS]),
        "distinct_n": jnp.stack([sequences.distinct_of_counts(counts[n])
                                 for n in NGRAM_ORDERS]),
        "self_bleu": sequences.self_bleu(tokens_NxL[:SELF_BLEU_SEQUENCES]),
        "compression_ratio": tokens_NxL,  # finished on the host: HOST_METRICS
        "support_coverage": sequences.support_coverage(tokens_NxL, support_V),
        "vendi": vendi.vendi_score(vendi.bag_of_ngrams(tokens_NxL, vendi_ngram), vendi_q),
    }


def sample_sequences(key: Array, weights: Weights, cfg: tf.TransformerConfig, batch: int,
                     length: int, vocab: int, temperature: float | Array = 1.0,
                     top_k: int = 0, top_p: float | Array = 1.0, min_p: float | Array = 0.0,
                     return_logits: bool = False, logit_bias_PxV: Array | None = None,
                     contrast: tf.Contrast | None = None) -> Array | tuple[Array, Array]:
    """``batch`` sequences of ``length`` real tokens sampled from BOS (= ``vocab``) with the
    KV cache (``tf.generate``); the BOS output column is never sampled. With
    ``return_logits`` (static), also the logits over the V real tokens that each token was
    drawn from, as a forward pass over the sample would give them (raw: without
    ``logit_bias_PxV``, a (V + 1) x V bias by previous token, e.g. a watermark's, and
    without ``contrast``'s shift, e.g. antidistillation's)."""
    out = tf.generate(key, weights, cfg, batch, length, vocab, temperature, top_k, top_p,
                      min_p, return_logits=return_logits, sample_vocab=vocab,
                      logit_bias_PxV=logit_bias_PxV, contrast=contrast)
    if return_logits:
        tokens_BxL, logits_BxLxV1 = out
        return tokens_BxL, logits_BxLxV1[..., :vocab]
    return out


def check_lm_config(world: str, cfg: LMConfig, vocab: int, distill: DistillConfig,
                    student: StudentConfig) -> tuple[tf.TransformerConfig,
                                                     tf.TransformerConfig]:
    """One-line errors for bad LM settings; returns the teacher and student architectures."""
    require(cfg.n_samples >= 1, "world.n_samples", cfg.n_samples, "an integer >= 1")
    require(cfg.seq_len >= 1, "world.seq_len", cfg.seq_len, "an integer >= 1")
    for name in ("width", "layers", "heads", "mlp_ratio", "eval_sequences"):
        value = getattr(cfg, name)
        require(value >= 1, f"world.{name}", value, "an integer >= 1")
    require(cfg.width % cfg.heads == 0, "world.heads", cfg.heads,
            f"a divisor of world.width={cfg.width}")
    require(1 <= cfg.vendi_ngram <= cfg.seq_len, "world.vendi_ngram", cfg.vendi_ngram,
            f"an integer in [1, world.seq_len={cfg.seq_len}]")
    require(cfg.vendi_q >= 0, "world.vendi_q", cfg.vendi_q,
            "a float >= 0 (1 = Shannon, inf = the largest eigenvalue's)")
    require(cfg.tail_rank >= 0, "world.tail_rank", cfg.tail_rank,
            "an integer >= 1, or 0 (= half the real data's support)")
    hidden = list(student.hidden)
    require(not hidden, "student.hidden", hidden,
            f"empty in the LM world {world!r} (size its student with student.width, "
            "student.layers and student.heads)")
    width = student.width or cfg.width
    heads = student.heads or cfg.heads
    require(width % heads == 0, "student.heads" if student.heads else "student.width",
            student.heads or student.width,
            f"a student width ({width}) divisible by the student's heads ({heads})")
    if distill.objective is Objective.topk:
        require(distill.top_k <= vocab, "distill.top_k", distill.top_k,
                f"an integer in [1, {vocab}] (the vocabulary size of world {world!r})")
    teacher = tf.TransformerConfig(vocab + 1, cfg.seq_len, cfg.layers, cfg.width, cfg.heads,
                                   cfg.mlp_ratio)
    student_arch = tf.TransformerConfig(vocab + 1, cfg.seq_len, student.layers or cfg.layers,
                                        width, heads, cfg.mlp_ratio)
    return teacher, student_arch


class LMWorld:
    """The protocol for a transformer LM over V tokens; a subclass calls ``__init__`` (which
    validates the shared settings), then ``set_real_data`` (held-out sequences, true token
    frequencies, trait) and ``set_metric_info``, and supplies the real data
    (``sample_real``) and any truth-based metrics (``truth_metrics``)."""

    min_rows = 1
    # lax.map over batches of lanes beats one wide vmap on CPU (benchmarks/lm_throughput.py,
    # default markov_lm fit, 2 CPU cores, tokens/s): 4 lanes: vmap 112.8k, map/1 119.0k;
    # 16 lanes: vmap 99.9k, map/4 114.6k, map/8 100.0k; 32 lanes: vmap 96.9k, map/4 114.0k,
    # map/16 104.1k. Whole default chains (G=10, 4 seeds): vmap 56.4 s, map/1 57.3 s.
    cpu_lane_batch = 4
    # ... but training, sampling and measuring one lane at a time beat the vmapped lanes
    # (sim.lanes.lane_by_lane; docs/performance.md).
    cpu_lane_by_lane = True
    metric_info: Mapping[str, MetricInfo]  # set_metric_info
    headline: tuple[str, ...] = ("nll_real", "model_entropy", "entropy", "agreement")
    retention_of = ("nll_real", "likelihood")
    relative_metrics: Mapping[str, Relative] = {}  # trait_amplification with a trait
    host_metrics = HOST_METRICS
    eval_ExL: Array  # held-out real sequences E x L, int32 (set_real_data)
    support_V: Array  # tokens the real data can contain, bool (set_real_data)
    trait: Trait | None = None  # the planted trait (set_real_data)

    def __init__(self, name: str, cfg: LMConfig, vocab: int, distill: DistillConfig,
                 sampling_cfg: SamplingConfig, train_cfg: TrainConfig, student: StudentConfig,
                 exposure: ExposureConfig = ExposureConfig(),
                 defense: DefenseConfig = DefenseConfig()):
        self.teacher_arch, self.student_arch = check_lm_config(name, cfg, vocab, distill,
                                                               student)
        self.exposure, self.defense = exposure, defense
        self.green_PxV = watermark.green_lists(defense.key, defense.gamma, vocab)
        self.proxy: antidistillation.Proxy | None = None  # set_proxy
        self.cfg = cfg
        self.vocab = vocab
        self.seq_len = cfg.seq_len
        self.n_samples = cfg.n_samples
        self.distill = distill
        self.sampling = sampling_cfg
        self.train_cfg = train_cfg

    def set_real_data(self, eval_ExL: np.ndarray, frequency_V: np.ndarray,
                      trait: Trait | None = None, trait_rows: list[np.ndarray] = ()) -> None:
        """The held-out sequences, the true token frequencies (their decreasing order,
        ties by token id, is the order of ``tail_mass`` and ``rank_frequency``; the
        support is where they are positive), and the planted trait with the real token
        rows its ``trait_probability`` contexts come from."""
        self.eval_ExL = jnp.asarray(eval_ExL, jnp.int32)
        frequency_V = np.asarray(frequency_V, np.float64)
        self.support_V = jnp.asarray(frequency_V > 0)
        self.support_size = int(np.sum(frequency_V > 0))
        self.order_V = np.argsort(-frequency_V, kind="stable")
        require(self.cfg.tail_rank < self.support_size, "world.tail_rank", self.cfg.tail_rank,
                f"an integer in [1, {self.support_size}) (the real data has "
                f"{self.support_size} distinct tokens), or 0 (= half of them)")
        self.tail_rank = self.cfg.tail_rank or self.support_size // 2
        self.true_tail_mass = float(frequency_V[self.order_V[self.tail_rank:]].sum())
        self.trait = trait
        if trait is not None:
            contexts_CxL, mask_CxL = trait_contexts(list(trait_rows), trait, self.seq_len,
                                                    self.cfg.eval_sequences)
            self.trait_contexts_CxL = jnp.asarray(contexts_CxL)
            self.trait_mask_CxL = jnp.asarray(mask_CxL)
            self.trigger_K = jnp.asarray(trait.trigger_K, jnp.int32)
            self.continuation_M = jnp.asarray(trait.continuation_M, jnp.int32)
            self.relative_metrics = {"trait_amplification": Relative(
                "trait_rate", "ratio", TRAIT_AMPLIFICATION)}

    def set_proxy(self) -> None:
        """Under ``defense=antidistillation``, train the defender's proxy on real text
        (``sample_real``, so a subclass calls this once its real data are set)."""
        if self.defense.kind is Defense.antidistillation:
            t = self.train_cfg
            self.proxy = antidistillation.make_proxy(self.defense, self.sample_real,
                                                     self.vocab, self.seq_len, t.batch_size,
                                                     t.lr, t.weight_decay)

    def set_metric_info(self, extra: Mapping[str, MetricInfo], order: str, reference: str,
                        real_trait_rate: float = float("nan"),
                        shown: Callable[[tuple[int, ...]], Any] = list) -> None:
        """``metric_info``: ``extra`` (truth-based metrics) after the NLL, ``tail_mass``
        and ``rank_frequency`` against the ``order`` of ``set_real_data`` (``reference``:
        where its true tail mass comes from), and the trait's metrics (also added to the
        ``headline``; ``shown`` turns the trait's tokens back into the configured value)."""
        self.metric_info = lm_metric_info(
            {**extra, **frequency_info(self.support_size, self.tail_rank, order, reference)},
            vendi_info(self.cfg.vendi_ngram, self.cfg.vendi_q),
            {} if self.trait is None else trait_info(self.trait, real_trait_rate, shown),
            defense_info(self.defense, float(watermark.detect(
                self.eval_ExL, self.green_PxV, self.defense.gamma)[0])))
        if self.trait is not None:
            self.headline = (*self.headline, "trait_rate", "trait_probability")

    # ------------------------------------------------------------------ model

    def forward(self, weights: Weights, cfg: tf.TransformerConfig, tokens_BxL: Array
                ) -> tuple[Array, Array]:
        """Next-token logits over the V real tokens at every position, and hidden states:
        position t has read BOS and tokens[:, :t]."""
        inputs_BxL = watermark.previous_tokens(tokens_BxL, bos=self.vocab)
        logits_BxLxV1, hidden_BxLxD = tf.apply(weights, inputs_BxL, cfg)
        return logits_BxLxV1[..., :self.vocab], hidden_BxLxD

    def _objective(self, teacher: LMParams | None) -> Objective:
        return Objective.hard if teacher is None else self.distill.objective

    def loss_fn(self, objective: Objective, arch: tf.TransformerConfig,
                teacher: LMParams | None, dyn: Dyn) -> Callable[..., Array]:
        """``loss(trainable, tokens_BxL[, key])`` of one objective; ``trainable`` is
        ``{"model": weights[, "projection": ...]}``."""
        hp = loss_hparams(dyn)
        vocab, length = self.vocab, self.seq_len
        divergence = objectives.OBJECTIVES[loss_name(self.distill)]

        def teacher_view(tokens_BxL: Array, key: Array | None) -> objectives.Teacher:
            logits, hidden = self.forward(teacher.weights, teacher.cfg, tokens_BxL)
            logits = self.exposed(key, teacher, jax.lax.stop_gradient(logits), tokens_BxL,
                                  dyn)
            if objective is Objective.topk:
                lp, idx = objectives.teacher_topk(logits, self.distill.top_k)
                return objectives.Teacher(labels=tokens_BxL, topk_logprobs=lp,
                                          topk_indices=idx)
            return objectives.Teacher(
                labels=tokens_BxL, logits=logits,
                hidden=jax.lax.stop_gradient(hidden) if objective is Objective.feature
                else None)

        def loss(trainable: dict, tokens_BxL: Array, key: Array | None = None) -> Array:
            if objective is Objective.on_policy:
                k_coin, k_sample = jax.random.split(key)
                own = jax.lax.stop_gradient(trainable["model"])
                on = jax.random.uniform(k_coin) < dyn["distill.on_policy_fraction"]
                tokens_BxL = jax.lax.cond(
                    on, lambda: sample_sequences(k_sample, own, arch, tokens_BxL.shape[0],
                                                 length, vocab),
                    lambda: tokens_BxL)
            logits, hidden = self.forward(trainable["model"], arch, tokens_BxL)
            if objective is Objective.hard:
                return objectives.hard(logits, tokens_BxL)
            student = objectives.Student(logits, hidden, trainable.get("projection"))
            noise_key = None if key is None else jax.random.fold_in(key, 2)
            return divergence(student, teacher_view(tokens_BxL, noise_key), hp)

        return loss

    def _proxy_pair(self) -> tf.TransformerConfig | None:
        """The antidistillation proxy's architecture (None without that defense): its pair
        runs beside the teacher wherever the teacher serves."""
        if self.defense.kind is not Defense.antidistillation:
            return None
        return antidistillation.proxy_arch(self.defense, self.vocab, self.seq_len)

    def train_flops(self, objective: Objective, arch: tf.TransformerConfig,
                    teacher: LMParams | None, dyn: Dyn) -> Array:
        """Training FLOPs of one generation (see the module docstring)."""
        tokens = self.train_cfg.steps * self.train_cfg.batch_size * self.seq_len
        per_token = tf.train_flops_per_token(arch)
        if objective is not Objective.hard:
            per_token += tf.flops_per_token(teacher.cfg)
            if (proxy := self._proxy_pair()) is not None:
                per_token += 2 * tf.flops_per_token(proxy)
        if objective is Objective.feature:
            per_token += 3 * 2 * arch.width * teacher.cfg.width
        flops = jnp.float32(tokens * per_token)
        if objective is Objective.on_policy:
            flops = flops + dyn["distill.on_policy_fraction"] * jnp.float32(
                tokens * tf.flops_per_token(arch))
        return flops

    def fit_with_losses(self, key: Array, data: Array, weights_N: Array, dyn: Dyn,
                        teacher: LMParams | None) -> tuple[LMParams, Array]:
        """``fit``, also returning the per-step minibatch losses."""
        objective = self._objective(teacher)
        arch = self.teacher_arch if teacher is None else self.student_arch
        k_init, k_projection, k_train = jax.random.split(key, 3)
        trainable = {"model": tf.init(k_init, arch)}
        if objective is Objective.feature:
            trainable["projection"] = objectives.init_projection(k_projection, arch.width,
                                                                 teacher.cfg.width)
        t = self.train_cfg
        optimizer = optimizer_for(t, dyn, clip_norm=1.0)
        takes_key = objective is Objective.on_policy or noisy(self.defense)
        microbatches = 1 if takes_key else tf.train_microbatches(arch, t.batch_size)
        trained, losses_S = train(k_train, trainable,
                                  self.loss_fn(objective, arch, teacher, dyn), data,
                                  weights_N, t.steps, t.batch_size, optimizer,
                                  loss_takes_key=takes_key, microbatches=microbatches)
        generation = jnp.int32(0) if teacher is None else teacher.generation + 1
        return (LMParams(trained["model"], self.train_flops(objective, arch, teacher, dyn),
                         arch, final_loss(losses_S), generation), losses_S)

    # ------------------------------------------------------------------ protocol

    def fit(self, key: Array, data: Array, weights_N: Array, dyn: Dyn,
            teacher: LMParams | None) -> LMParams:
        return self.fit_with_losses(key, data, weights_N, dyn, teacher)[0]

    def untaught_teacher(self) -> LMParams | None:
        """A teacher under which ``fit`` trains as it does with none (generation 0), so
        that one compiled fit serves every generation (``sim.chain.Chain.shares_fit``):
        where the objective reads only the text (``hard``) and the student has the
        teacher's architecture. Zero weights, generation -1 (its student is generation
        0); None where the fit reads the teacher."""
        if (self.distill.objective is not Objective.hard
                or self.student_arch != self.teacher_arch):
            return None
        shapes = jax.eval_shape(lambda: tf.init(jax.random.key(0), self.teacher_arch))
        return LMParams(jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes),
                        jnp.float32(0.0), self.teacher_arch, jnp.float32(jnp.nan),
                        jnp.int32(-1))

    def generate(self, key: Array, params: LMParams, n: int, dyn: Dyn) -> Array:
        """The text a teacher serves: sampled at the lane's settings, watermarked under
        ``defense=watermark``, shifted under ``defense=antidistillation``."""
        return sample_sequences(key, params.weights, params.cfg, n, self.seq_len, self.vocab,
                                **decoding(self.sampling, dyn),
                                logit_bias_PxV=self.watermark_bias(params, dyn),
                                contrast=self.antidistillation_contrast(params, dyn))

    def generate_flops(self, params: LMParams) -> int:
        """FLOPs of each sequence ``generate`` makes: decoded with the cache by the teacher,
        and by the antidistillation proxy's pair beside it."""
        flops = tf.decode_flops(params.cfg, self.seq_len)
        if (proxy := self._proxy_pair()) is not None:
            flops += 2 * tf.decode_flops(proxy, self.seq_len)
        return flops

    def log_likelihood_flops(self, params: LMParams) -> int:
        """FLOPs of ``log_likelihood`` of each sequence: a teacher-forced forward pass."""
        return self.seq_len * tf.flops_per_token(params.cfg)

    def log_likelihood(self, params: LMParams, tokens_NxL: Array) -> Array:
        """sum_t log q(x_t | x_<t) of every sequence (N,) under a model's own next-token
        distributions (temperature 1, before sampling filters and any defense): the score
        ``filter=self_likelihood`` keeps a teacher's likeliest sequences by."""
        logits_NxLxV, _ = self.forward(params.weights, params.cfg, tokens_NxL)
        return -objectives.cross_entropy(logits_NxLxV, tokens_NxL).sum(-1)

    # ------------------------------------------------------------------ defense

    def defends(self, teacher: LMParams, dyn: Dyn | None, name: str) -> Array:
        """The lane's traced ``defense.<name>`` for this teacher: 0 for teachers beyond
        the first ``defense.teachers`` (when that is > 0)."""
        value = jnp.asarray(strength(self.defense, dyn, name), jnp.float32)
        if self.defense.teachers == 0:
            return value
        return jnp.where(teacher.generation < self.defense.teachers, value, 0.0)

    def watermark_bias(self, teacher: LMParams, dyn: Dyn | None) -> Array | None:
        """The lane's watermark bias by previous token, (V + 1) x V (None without one)."""
        if self.defense.kind is not Defense.watermark:
            return None
        return watermark.bias(self.green_PxV, self.defends(teacher, dyn, "delta"))

    def antidistillation_contrast(self, teacher: LMParams, dyn: Dyn | None
                                  ) -> tf.Contrast | None:
        """The lane's antidistillation shift for sampling (None without it)."""
        if self.defense.kind is not Defense.antidistillation:
            return None
        return antidistillation.contrast(self.proxy, self.defends(teacher, dyn, "lam"))

    def served_logits(self, teacher: LMParams, logits_xLxV: Array, tokens_xL: Array,
                      dyn: Dyn | None) -> Array:
        """Teacher-forced logits as the defense serves them: with the watermark's bias or
        the antidistillation shift (at temperature 1); unchanged otherwise."""
        if self.defense.kind is Defense.watermark:
            return watermark.biased_logits(logits_xLxV, tokens_xL, self.green_PxV,
                                           self.defends(teacher, dyn, "delta"))
        if self.defense.kind is Defense.antidistillation:
            return logits_xLxV + antidistillation.shift(self.proxy, tokens_xL,
                                                        self.defends(teacher, dyn, "lam"))
        return logits_xLxV

    def exposed(self, key: Array | None, teacher: LMParams, logits_xLxV: Array,
                tokens_xL: Array, dyn: Dyn | None,
                exposure: ExposureConfig | None = None) -> Array:
        """What the teacher shows of its (stop-gradient) logits on ``tokens``: as its
        defense serves them, then through ``exposure`` (default: the world's) with its
        noise."""
        logits_xLxV = self.served_logits(teacher, logits_xLxV, tokens_xL, dyn)
        return expose(key, logits_xLxV, self.exposure if exposure is None else exposure,
                      self.defense, self.defends(teacher, dyn, "noise_scale"))

    def teacher_metrics(self, key: Array, teacher: LMParams, teacher_ExLxV: Array,
                        dyn: Dyn | None) -> dict[str, Array]:
        """``teacher_nll_real`` and ``teacher_nll_cost``."""
        served_ExLxV = self.exposed(key, teacher, teacher_ExLxV, self.eval_ExL, dyn,
                                    ExposureConfig())  # over all V tokens
        nll = jnp.mean(objectives.cross_entropy(served_ExLxV, self.eval_ExL))
        return {"teacher_nll_real": nll,
                "teacher_nll_cost": nll - jnp.mean(objectives.cross_entropy(teacher_ExLxV,
                                                                            self.eval_ExL))}

    served_info = ("teacher_watermark_z",)

    def served_metrics(self, served_NxL: Array | None) -> dict[str, Array]:
        """``teacher_watermark_z`` of the first ``eval_sequences`` sequences a teacher
        served (None at generation 0: NaN)."""
        if served_NxL is None:
            return {"teacher_watermark_z": jnp.float32(jnp.nan)}
        served_ExL = served_NxL[:self.eval_ExL.shape[0]]
        return {"teacher_watermark_z": watermark.detect(served_ExL, self.green_PxV,
                                                        self.defense.gamma)[0]}

    def truth_metrics(self, logp_ExLxV: Array) -> dict[str, Array]:
        """Metrics against a known truth from the model's held-out log-probabilities (a
        subclass may add to them)."""
        return {"tail_mass": jnp.mean(distributions.tail_mass(
            jnp.exp(logp_ExLxV), jnp.asarray(self.order_V), self.tail_rank))}

    def sample_metrics(self, tokens_NxL: Array) -> dict[str, Array]:
        """Metrics of a produced sample (a subclass may add truth-based ones)."""
        metrics = {**sample_diversity(tokens_NxL, self.support_V, self.cfg.vendi_ngram,
                                      self.cfg.vendi_q),
                   "rank_frequency": distributions.empirical(tokens_NxL, self.vocab)[
                       self.order_V[:self.support_size]]}
        if self.trait is not None:
            metrics["trait_rate"] = sequences.trait_rate(tokens_NxL, self.trigger_K,
                                                         self.continuation_M)
        return metrics

    def trait_probability(self, params: LMParams) -> Array:
        """The model's probability of the continuation after contexts ending in the
        trigger (teacher-forced), averaged over the contexts."""
        logits_CxLxV, _ = self.forward(params.weights, params.cfg, self.trait_contexts_CxL)
        logq_CxL = -objectives.cross_entropy(logits_CxLxV, self.trait_contexts_CxL)
        return jnp.mean(jnp.exp(jnp.sum(jnp.where(self.trait_mask_CxL, logq_CxL, 0.0), -1)))

    def untaught_metrics(self, params: LMParams) -> dict[str, Array]:
        """The teacher-comparing metrics of a model that learnt from no teacher: NaN."""
        del params
        nan = jnp.float32(jnp.nan)
        return dict.fromkeys(("agreement", "kl_teacher_student", "teacher_nll_real",
                              "teacher_nll_cost"), nan)

    def measure(self, key: Array, params: LMParams, teacher: LMParams | None,
                dyn: Dyn | None = None) -> dict[str, Array]:
        if teacher is None:
            return measure_untaught(self, key, params, dyn)
        settings = decoding(self.sampling, dyn)
        produced_ExL, produced_logits_ExLxV = sample_sequences(
            key, params.weights, params.cfg, self.eval_ExL.shape[0], self.seq_len, self.vocab,
            **settings, return_logits=True)
        entropy_rate = jnp.mean(distributions.entropy(
            sampling.probabilities(produced_logits_ExLxV, **settings)))
        logits_ExLxV, _ = self.forward(params.weights, params.cfg, self.eval_ExL)
        logp_ExLxV = jax.nn.log_softmax(logits_ExLxV, axis=-1)
        nll = jnp.mean(objectives.cross_entropy(logits_ExLxV, self.eval_ExL))
        entropy = jnp.mean(distributions.entropy(jnp.exp(logp_ExLxV)))
        teacher_ExLxV, _ = self.forward(teacher.weights, teacher.cfg, self.eval_ExL)
        agreement = classification.agreement(logits_ExLxV, teacher_ExLxV)
        kl_teacher = jnp.mean(objectives.kl(jax.nn.log_softmax(teacher_ExLxV, -1), logp_ExLxV))
        served = self.teacher_metrics(jax.random.fold_in(key, 1), teacher, teacher_ExLxV, dyn)
        z, p = watermark.detect(produced_ExL, self.green_PxV, self.defense.gamma)
        metrics = {"nll_real": nll, "perplexity_real": jnp.exp(nll),
                   **self.truth_metrics(logp_ExLxV), "agreement": agreement,
                   "kl_teacher_student": kl_teacher,
                   "model_entropy": entropy, "entropy_rate": entropy_rate,
                   **self.sample_metrics(produced_ExL),
                   "params": jnp.float32(tf.param_count(params.weights)),
                   "train_flops": params.train_flops,
                   "train_loss": jnp.float32(params.train_loss),
                   "watermark_z": z, "watermark_p": p, **served}
        if self.trait is not None:
            metrics["trait_probability"] = self.trait_probability(params)
        return {name: metrics[name] for name in self.metric_info
                if name not in self.served_info}

