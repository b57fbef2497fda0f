"""Antidistillation sampling (Savani et al. 2025): the teacher samples tokens that would
make a student trained on them worse.

Shift. When the teacher draws x_t after x_<t at temperature T, token v's logit becomes

    logits_t[v] / T + lam * Delta(v),
    Delta(v) = [log q_{theta + eps g}(v | x_<t) - log q_{theta - eps g}(v | x_<t)] / (2 eps),

q_theta a small proxy student, g = grad_theta L(theta) the gradient of the proxy's loss on
the defender's downstream objective. Delta(v) is a central finite difference of
<grad_theta log q_theta(v | x_<t), g>: to first order, how much one gradient step of the
proxy on token v (theta += eta grad log q(v)) raises its loss L (by eta Delta(v)). With
``lam`` > 0 the teacher favours the tokens that most raise a distiller's loss, at the cost
of its own likelihood. ``lam = 0`` is the teacher's own sampling, exactly. (The paper's
code shifts the logits before the temperature, and differences logits rather than
log-probabilities: the same within each row up to a constant, and the same as here at
T = 1, where every teacher-forced view below is taken.)

Proxy (the simplest faithful choice). As in the paper the proxy is one fixed small model,
independent of the teacher, and g is computed once, before the chain: a transformer of
``defense.proxy_width/layers/heads`` (BOS input, context ``world.seq_len``) is trained from
``fold_in(key(defense.key), 0)`` for ``defense.proxy_steps`` AdamW steps (the world's
``train.lr``, ``train.weight_decay``, ``train.batch_size``; constant rate, clipped to norm
1) of cross-entropy on ``defense.proxy_sequences`` real sequences (``sample_real`` at
``fold_in(., 1)``): a small model pretrained on the domain. L is its mean NLL on as many
fresh real sequences (``fold_in(., 2)``), the downstream objective a distiller wants to do
well on (the metrics' held-out sequences are not used). g is the raw, unnormalised mean
gradient, as in the paper's code, so ``lam`` and ``epsilon`` scale with its norm. The two
perturbed copies theta +- eps g are stored; sampling runs them beside the teacher with
their own KV caches (two small extra forwards per token, ``sim.models.transformer.
Contrast``), and every teacher-forced view (the logits it exposes, its defended NLL) runs
them over the sequence.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from sim import objectives, sampling
from sim.exposure import DefenseConfig
from sim.models import transformer as tf
from sim.train import make_optimizer, train
from sim.watermark import previous_tokens

Array = jax.Array
Weights = Any


@flax.struct.dataclass
class Proxy:
    """The proxy student perturbed along the gradient of its loss: theta +- eps g."""

    plus: Weights
    minus: Weights
    cfg: tf.TransformerConfig = flax.struct.field(pytree_node=False)
    epsilon: float = flax.struct.field(pytree_node=False, default=1e-2)


def proxy_arch(defense: DefenseConfig, vocab: int, seq_len: int) -> tf.TransformerConfig:
    """The proxy's architecture: V real tokens plus BOS, context ``seq_len``."""
    return tf.TransformerConfig(vocab + 1, seq_len, defense.proxy_layers, defense.proxy_width,
                                defense.proxy_heads)


def logits(weights: Weights, cfg: tf.TransformerConfig, tokens_xL: Array) -> Array:
    """Next-token logits ``[..., L, V]`` over the V real tokens (position t read BOS and
    tokens[:t]; BOS = V)."""
    vocab = cfg.vocab_size - 1
    return tf.apply(weights, previous_tokens(tokens_xL, bos=vocab), cfg)[0][..., :vocab]


def nll(weights: Weights, cfg: tf.TransformerConfig, tokens_NxL: Array) -> Array:
    """Mean next-token NLL of real sequences: the proxy's loss L."""
    return objectives.hard(logits(weights, cfg, tokens_NxL), tokens_NxL)


def perturbed(weights: Weights, gradient: Weights, epsilon: float) -> tuple[Weights, Weights]:
    """(theta + eps g, theta - eps g)."""
    def along(sign: float) -> Weights:
        return jax.tree_util.tree_map(lambda w, g: w + sign * epsilon * g, weights, gradient)
    return along(1.0), along(-1.0)


@functools.partial(jax.jit, static_argnames=("cfg", "steps", "batch_size", "epsilon"))
def fit_proxy(key: Array, train_NxL: Array, held_NxL: Array, cfg: tf.TransformerConfig,
              steps: int, batch_size: int, lr: float, weight_decay: float,
              epsilon: float) -> Proxy:
    """Train the proxy on ``train_NxL`` and perturb it along the gradient of its NLL on
    ``held_NxL``."""
    k_init, k_train = jax.random.split(key)
    weights, _ = train(k_train, tf.init(k_init, cfg),
                       lambda w, tokens_BxL: nll(w, cfg, tokens_BxL), train_NxL,
                       jnp.ones(train_NxL.shape[0]), steps, batch_size,
                       make_optimizer(lr, weight_decay, clip_norm=1.0),
                       microbatches=tf.train_microbatches(cfg, batch_size))
    gradient = jax.grad(nll)(weights, cfg, held_NxL)
    return Proxy(*perturbed(weights, gradient, epsilon), cfg, epsilon)


def make_proxy(defense: DefenseConfig, sample_real: Any, vocab: int, seq_len: int,
               batch_size: int, lr: float, weight_decay: float) -> Proxy:
    """The defender's proxy (module docstring), from ``sample_real(key, n)``."""
    root = jax.random.key(defense.key)
    n = defense.proxy_sequences
    sample_real = jax.jit(sample_real, static_argnums=1)  # one compile, not one per operation
    return fit_proxy(jax.random.fold_in(root, 0), sample_real(jax.random.fold_in(root, 1), n),
                     sample_real(jax.random.fold_in(root, 2), n),
                     proxy_arch(defense, vocab, seq_len), defense.proxy_steps, batch_size,
                     lr, weight_decay, defense.epsilon)


def delta(logits_plus_xV: Array, logits_minus_xV: Array, epsilon: float) -> Array:
    """Delta ``[..., V]``: the central finite difference of the proxy's log-probabilities."""
    return sampling.contrast(logits_plus_xV, logits_minus_xV, 1.0 / (2.0 * epsilon))


def shift(proxy: Proxy, tokens_xL: Array, lam: Array | float) -> Array:
    """``lam * Delta`` ``[..., L, V]`` at every position of the sequences (teacher-forced):
    what the defense adds to the teacher's logits at temperature 1."""
    lam = jnp.asarray(lam, jnp.float32)
    return lam * delta(logits(proxy.plus, proxy.cfg, tokens_xL),
                       logits(proxy.minus, proxy.cfg, tokens_xL), proxy.epsilon)


def contrast(proxy: Proxy, lam: Array | float) -> tf.Contrast:
    """The proxy pair as ``tf.generate``'s contrast: weight lam / (2 eps)."""
    return tf.Contrast(proxy.plus, proxy.minus,
                       jnp.asarray(lam, jnp.float32) / (2.0 * proxy.epsilon), proxy.cfg)
