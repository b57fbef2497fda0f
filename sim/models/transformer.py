"""A small causal decoder-only transformer LM (GPT-style, pre-LayerNorm) in flax.linen.

Parameters are a plain pytree, so many independent models ("lanes") train in parallel
under ``jax.vmap`` over a leading axis of the params and keys. Functions:

* ``init(key, cfg) -> params``
* ``apply(params, tokens_BxL, cfg) -> (logits_BxLxV, hidden_BxLxD)``: full causal forward;
  ``hidden`` is the final pre-logit representation (after the last LayerNorm), the one used
  for feature distillation.
* ``init_cache`` / ``decode_step``: incremental decoding with a key/value cache, so that
  sampling T tokens costs T single-position steps instead of T full forwards; the cache
  comes in segments of positions, and a step reads those up to its own (``cache_segments``).
* ``generate(...) -> tokens_BxT`` (and optionally the per-step raw logits_BxTxV), a
  ``lax.scan`` over positions that samples with ``sim.sampling``; a ``Contrast`` of two
  other models (each with its own cache) can shift the sampling logits (antidistillation
  sampling, ``sim.antidistillation``).
* ``param_count``, ``flops_per_token`` (forward), ``train_flops_per_token`` (3x forward)
  and ``decode_flops`` (sampling a sequence with the cache).
* ``matmul``: every dense layer's product, with derivative rules whose reverse-mode products
  XLA's CPU backend runs fast (no transposed right operand; weight gradients with the
  narrower operand on the left).

``init``, ``apply``, ``decode_step`` and ``generate`` are jitted (cfg and shape arguments
static; ``generate`` keeps sampling filters that are off out of its traced arguments);
they nest inside other jit/vmap/scan transforms as usual.

Shapes: B batch, L sequence length (<= context C), V vocab, D width, H heads, K head width.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from sim import sampling
from sim.models import draw_params

Array = jax.Array
Params = Any
# per layer: (keys, values), each a tuple of segments B x H x C_s x K (``init_cache``)
Cache = tuple[tuple[tuple[Array, ...], tuple[Array, ...]], ...]


@dataclass(frozen=True)
class TransformerConfig:
    """Static architecture of the LM (hashable, so it can be a static jit argument)."""

    vocab_size: int
    context: int
    layers: int
    width: int
    heads: int
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "layers", "width", "heads", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TransformerConfig.{name}={value!r}: must be an int >= 1")
        if self.width % self.heads:
            raise ValueError(f"TransformerConfig: width={self.width} is not divisible by "
                             f"heads={self.heads}")

    @property
    def head_width(self) -> int:
        return self.width // self.heads


@flax.struct.dataclass
class Contrast:
    """Two models of one architecture that shift a sampler's logits: token v's scaled
    logit becomes logits[v] / temperature + weight * (log q_plus(v) - log q_minus(v))
    (``sim.sampling.contrast``; each model reads the sampled tokens from the same BOS)."""

    plus: Params
    minus: Params
    weight: Array  # float32 scalar (traced: a lane's setting)
    cfg: TransformerConfig = flax.struct.field(pytree_node=False)


@jax.custom_jvp
def matmul(x_xI: Array, w_IxO: Array) -> Array:
    """``x @ w`` over the last axis of ``x``, with the derivatives of ``x @ w``, written so
    that XLA's CPU backend runs reverse mode's products at their fast rates: the input
    gradient is ``g`` times a transposed copy of the kernel, a plain product (XNNPACK runs
    one with a transposed right operand at about half the rate), and the weight gradient,
    which contracts the rows of ``x`` and of ``g`` (Eigen), has the narrower of the two on
    the left (1.5-2x faster than the other way round; docs/performance.md). Copying a
    kernel, or transposing an O x I gradient, costs little next to the products."""
    return x_xI @ w_IxO


@matmul.defjvp
def _matmul_jvp(primals: tuple[Array, Array], tangents: tuple[Array, Array]
                ) -> tuple[Array, Array]:
    (x_xI, w_IxO), (dx_xI, dw_IxO) = primals, tangents
    # w as the transpose of a transposed copy (the barrier keeps XLA from folding the two):
    # reverse mode's g @ w.T becomes g times that copy, a plain product
    w_IxO_via_copy = jax.lax.optimization_barrier(w_IxO.T).T
    # the weight gradient x.T @ g contracts the N rows of x and of g. XLA's CPU backend
    # (Eigen) runs that product 1.5-2x faster with the narrower operand on the left, so
    # where I > O reverse mode computes it as (g.T @ x).T: x @ dw written as
    # (dw.T @ x.T).T with a barrier that keeps XLA from folding the last transpose back
    x_NxI = x_xI.reshape(-1, x_xI.shape[-1])
    if w_IxO.shape[0] > w_IxO.shape[1]:  # I > O
        dy_NxO = jax.lax.dot_general(jax.lax.optimization_barrier(dw_IxO.T), x_NxI,
                                     (((1,), (1,)), ((), ()))).T
    else:
        dy_NxO = x_NxI @ dw_IxO
    dy_xO = dx_xI @ w_IxO_via_copy + dy_NxO.reshape(dx_xI.shape[:-1] + (-1,))
    return x_xI @ w_IxO, dy_xO


def _dense_product(x_xI: Array, w_IxO: Array, dimension_numbers: Any, precision: Any = None,
                   preferred_element_type: Any = None) -> Array:
    """``matmul`` as ``nn.Dense``'s ``dot_general`` (x's last axis with the kernel's first)."""
    assert dimension_numbers == (((x_xI.ndim - 1,), (0,)), ((), ())), dimension_numbers
    return matmul(x_xI, w_IxO)


def _dense(features: int, std: float, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias,
                    kernel_init=nn.initializers.normal(stddev=std),
                    bias_init=nn.initializers.zeros, dot_general=_dense_product)


def _attend(q_BxLxHxK: Array, k_BxSxHxK: Array, v_BxSxHxK: Array, mask_LxS: Array
            ) -> Array:
    """Softmax attention of L queries over S keys."""
    scale = 1.0 / math.sqrt(q_BxLxHxK.shape[-1])
    scores_BxHxLxS = jnp.einsum("blhk,bshk->bhls", q_BxLxHxK, k_BxSxHxK) * scale
    weights = jax.nn.softmax(jnp.where(mask_LxS, scores_BxHxLxS, -jnp.inf), axis=-1)
    return jnp.einsum("bhls,bshk->blhk", weights, v_BxSxHxK)


def _attend_cached(q_BxHxK: Array, keys: tuple[Array, ...], values: tuple[Array, ...],
                   pos: Array) -> Array:
    """Softmax attention of one query per row over the cache positions <= ``pos``. The
    cache comes in segments of consecutive positions (``init_cache``), each laid out with
    the heads before the positions, so the products need no transposed copy of it; only
    the segments up to the one holding ``pos`` are read (a ``lax.switch`` on it)."""
    scale = 1.0 / math.sqrt(q_BxHxK.shape[-1])
    ends = _ends(keys)

    def attend_first(filled: int) -> Callable[..., Array]:
        def attend(q_BxHxK: Array, keys: tuple[Array, ...], values: tuple[Array, ...],
                   pos: Array) -> Array:
            scores_BxHxC = jnp.concatenate([jnp.einsum("bhk,bhck->bhc", q_BxHxK, k)
                                            for k in keys[:filled]], -1) * scale
            visible_C = jnp.arange(ends[filled - 1]) <= pos
            weights_BxHxC = jax.nn.softmax(jnp.where(visible_C, scores_BxHxC, -jnp.inf), -1)
            return sum(jnp.einsum("bhc,bhck->bhk", weights_BxHxC[..., end - v.shape[2]:end], v)
                       for end, v in zip(ends, values[:filled]))
        return attend

    # with one segment lax.switch calls its one branch: no switch in the program
    return jax.lax.switch(jnp.searchsorted(jnp.asarray(ends), pos, side="right"),
                          [attend_first(s + 1) for s in range(len(keys))],
                          q_BxHxK, keys, values, pos)


def _ends(segments: tuple[Array, ...]) -> np.ndarray:
    """One past the last position of each of a cache's segments."""
    return np.cumsum([segment.shape[2] for segment in segments])


def _write(segments: tuple[Array, ...], new_BxHxK: Array, pos: Array) -> tuple[Array, ...]:
    """The cache's segments with ``new`` at position ``pos`` (each segment is written in
    place: the one holding ``pos`` with ``new``, the others with what they held)."""
    if len(segments) == 1:
        return (jax.lax.dynamic_update_slice_in_dim(segments[0], new_BxHxK[:, :, None], pos,
                                                    axis=2),)
    out = []
    for end, segment in zip(_ends(segments), segments):
        start = end - segment.shape[2]
        at = jnp.clip(pos - start, 0, segment.shape[2] - 1)
        held = jax.lax.dynamic_slice_in_dim(segment, at, 1, axis=2)
        inside = (pos >= start) & (pos < end)
        out.append(jax.lax.dynamic_update_slice_in_dim(
            segment, jnp.where(inside, new_BxHxK[:, :, None], held), at, axis=2))
    return tuple(out)


class Block(nn.Module):
    """Pre-LN block: x + attn(LN(x)); x + mlp(LN(x))."""

    cfg: TransformerConfig

    def setup(self) -> None:
        cfg = self.cfg
        residual_std = 0.02 / math.sqrt(2 * cfg.layers)
        self.ln_attn = nn.LayerNorm(epsilon=1e-5)
        self.qkv = _dense(3 * cfg.width, 0.02)
        self.attn_out = _dense(cfg.width, residual_std)
        self.ln_mlp = nn.LayerNorm(epsilon=1e-5)
        self.mlp_in = _dense(cfg.mlp_ratio * cfg.width, 0.02)
        self.mlp_out = _dense(cfg.width, residual_std)

    def _qkv(self, x_xD: Array) -> tuple[Array, Array, Array]:
        qkv = self.qkv(self.ln_attn(x_xD))
        shape = qkv.shape[:-1] + (self.cfg.heads, self.cfg.head_width)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def _mlp(self, x_xD: Array) -> Array:
        return x_xD + self.mlp_out(nn.gelu(self.mlp_in(self.ln_mlp(x_xD))))

    def __call__(self, x_BxLxD: Array) -> Array:
        length = x_BxLxD.shape[1]
        q, k, v = self._qkv(x_BxLxD)
        causal_LxL = jnp.tril(jnp.ones((length, length), bool))
        att_BxLxHxK = _attend(q, k, v, causal_LxL)
        x_BxLxD = x_BxLxD + self.attn_out(att_BxLxHxK.reshape(x_BxLxD.shape))
        return self._mlp(x_BxLxD)

    def step(self, x_BxD: Array, pos: Array, keys: tuple[Array, ...],
             values: tuple[Array, ...]) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]]:
        """One position: write its key/value into the cache at ``pos``, attend to <= pos."""
        q_BxHxK, k_BxHxK, v_BxHxK = self._qkv(x_BxD)
        keys, values = _write(keys, k_BxHxK, pos), _write(values, v_BxHxK, pos)
        att_BxHxK = _attend_cached(q_BxHxK, keys, values, pos)
        x_BxD = x_BxD + self.attn_out(att_BxHxK.reshape(x_BxD.shape))
        return self._mlp(x_BxD), keys, values


class TransformerLM(nn.Module):
    """Token + learned position embeddings, ``layers`` blocks, final LN, untied head."""

    cfg: TransformerConfig

    def setup(self) -> None:
        cfg = self.cfg
        init = nn.initializers.normal(stddev=0.02)
        self.token_embed = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=init)
        self.pos_embed = self.param("pos_embed", init, (cfg.context, cfg.width))
        self.blocks = [Block(cfg) for _ in range(cfg.layers)]
        self.ln_final = nn.LayerNorm(epsilon=1e-5)
        self.head = _dense(cfg.vocab_size, 0.02, use_bias=False)

    def __call__(self, tokens_BxL: Array) -> tuple[Array, Array]:
        length = tokens_BxL.shape[1]
        x_BxLxD = self.token_embed(tokens_BxL) + self.pos_embed[:length]
        for block in self.blocks:
            x_BxLxD = block(x_BxLxD)
        hidden_BxLxD = self.ln_final(x_BxLxD)
        return self.head(hidden_BxLxD), hidden_BxLxD

    def step(self, token_B: Array, pos: Array, cache: Cache
             ) -> tuple[Array, Array, Cache]:
        x_BxD = self.token_embed(token_B) + jax.lax.dynamic_index_in_dim(
            self.pos_embed, pos, axis=0, keepdims=False)
        new_cache = []
        for block, (keys, values) in zip(self.blocks, cache):
            x_BxD, keys, values = block.step(x_BxD, pos, keys, values)
            new_cache.append((keys, values))
        hidden_BxD = self.ln_final(x_BxD)
        return self.head(hidden_BxD), hidden_BxD, tuple(new_cache)


@functools.partial(jax.jit, static_argnames="cfg")
def init(key: Array, cfg: TransformerConfig) -> Params:
    """Fresh parameters (a pytree of float32 arrays) for one model: GPT-2 style, normal
    std 0.02 for embeddings and kernels, 0.02 / sqrt(2 layers) for the kernels that write
    into the residual stream, zero biases, unit LayerNorm scales."""
    dummy_1xC = jnp.zeros((1, cfg.context), jnp.int32)
    shapes = jax.eval_shape(TransformerLM(cfg).init, key, dummy_1xC)["params"]
    residual_std = 0.02 / math.sqrt(2 * cfg.layers)

    def leaf_init(names: tuple[str, ...], shape: tuple[int, ...]) -> tuple[float, float]:
        if names[-1] == "bias":
            return 0.0, 0.0
        if names[-1] == "scale":
            return 1.0, 0.0
        if names[-2:] in (("attn_out", "kernel"), ("mlp_out", "kernel")):
            return 0.0, residual_std
        return 0.0, 0.02

    return draw_params(key, shapes, leaf_init)


@functools.partial(jax.jit, static_argnames="cfg")
def apply(params: Params, tokens_BxL: Array, cfg: TransformerConfig) -> tuple[Array, Array]:
    """Causal forward pass over ``L <= context`` positions.

    Returns ``(logits_BxLxV, hidden_BxLxD)``; position t depends on tokens[:, :t+1] only.
    """
    if tokens_BxL.shape[-1] > cfg.context:
        raise ValueError(f"sequence length {tokens_BxL.shape[-1]} > context {cfg.context}")
    return TransformerLM(cfg).apply({"params": params}, tokens_BxL)


def init_cache(cfg: TransformerConfig, batch: int, length: int | None = None,
               segments: int | None = None) -> Cache:
    """An empty key/value cache for positions ``0..length-1`` (default: the context): per
    layer a tuple of keys and one of values, each of ``segments`` zero arrays
    ``B x H x C_s x K`` of consecutive positions (default ``cache_segments(length)``)."""
    length = cfg.context if length is None else length
    segments = min(length, cache_segments(length) if segments is None else segments)
    bounds = [length * s // segments for s in range(segments + 1)]
    shapes = [(batch, cfg.heads, end - start, cfg.head_width)
              for start, end in zip(bounds, bounds[1:])]
    return tuple((tuple(jnp.zeros(shape, jnp.float32) for shape in shapes),
                  tuple(jnp.zeros(shape, jnp.float32) for shape in shapes))
                 for _ in range(cfg.layers))


def cache_segments(length: int) -> int:
    """Segments of a key/value cache of ``length`` positions (``init_cache``): decoding
    position p reads only the segments up to the one holding p. On CPU 2, and 4 beyond 128
    positions: the attention's products over the cache were three quarters of the
    sampler's time. With the ``lm`` benchmark's model on one device, 1024 rows x 64 tokens
    sampled 44.9-49.9k tokens/s with 2 segments against 34.7-39.7k with one, compiling 0.1 s
    longer (3 segments: 1.3 s longer for no clear gain); 512 x 128 tokens 27.9-31.3k with 4
    against 25.8-29.1k with 2 (compiling 1.0-1.6 s longer); 256 x 256 tokens 17.0-18.7k
    with 4, 14.4-16.2k with 2 and 12.7-13.6k with one (docs/performance.md). Elsewhere one:
    an accelerator may wait for its host at a ``lax.switch``."""
    if jax.default_backend() != "cpu":
        return 1
    return 2 if length <= 128 else 4


@functools.partial(jax.jit, static_argnames="cfg")
def decode_step(params: Params, cache: Cache, token_B: Array, pos: Array | int,
                cfg: TransformerConfig) -> tuple[Array, Array, Cache]:
    """Feed ``token_B`` at position ``pos`` (traced ok; positions < pos must be in the
    cache). Returns ``(logits_BxV, hidden_BxD, cache)`` equal to the full forward's
    outputs at ``pos`` (to float32 rounding)."""
    return TransformerLM(cfg).apply({"params": params}, token_B, jnp.asarray(pos, jnp.int32),
                                    cache, method=TransformerLM.step)


def generate(key: Array, params: Params, cfg: TransformerConfig, batch: int, length: int,
             bos_token: int | Array = 0, temperature: float | Array = 1.0, top_k: int = 0,
             top_p: float | Array = 1.0, min_p: float | Array = 0.0,
             return_logits: bool = False, sample_vocab: int = 0,
             logit_bias_PxV: Array | None = None, contrast: Contrast | None = None
             ) -> Array | tuple[Array, Array]:
    """Sample ``batch`` sequences of ``length <= context`` tokens after a BOS token.

    Position 0 holds ``bos_token``; token t (t = 0..length-1 of the output) is drawn from
    the model's next-token distribution at position t, transformed by ``sim.sampling``
    (temperature/top_p/min_p may be traced; top_k is static, 0 = off; temperature <= 0 is
    greedy). Token t of every row is drawn with the uniform ``uniform(fold_in(key, t),
    (batch,))[row]``, so the rows do not depend on how they are blocked (``row_block``).
    ``batch``, ``length``, ``top_k`` and ``return_logits`` are static. ``sample_vocab > 0``
    (static) samples from the first ``sample_vocab`` outputs only (e.g. to never emit an
    input-only BOS token). Returns ``tokens_BxT`` (int32), plus the raw (untransformed)
    logits_BxTxV when ``return_logits``. ``logit_bias_PxV`` (rows indexed by the previous token, BOS
    included; columns the sampled outputs) is added to the logits before they are
    transformed: e.g. a green-list watermark (``sim.watermark``). ``contrast`` runs two more
    models over the same tokens and adds its shift after the temperature (before the
    filters; for temperature <= 0, greedy, it is not added). The returned logits stay raw.
    """
    if not 1 <= length <= cfg.context:
        raise ValueError(f"length={length} must be in [1, context={cfg.context}]")
    # A filter that is off as a Python value is not handed to the jitted sampler, whose
    # arguments are traced: sim.sampling then compiles it out, where a traced top_p = 1.0
    # would rank the vocabulary at every step (sampling measured 2x slower).
    filters = {name: value
               for name, value, off in (("top_p", top_p, 1.0), ("min_p", min_p, 0.0))
               if not (isinstance(value, (int, float)) and value == off)}
    return _generate(key, params, cfg, batch, length, bos_token, temperature, top_k,
                     return_logits=return_logits, sample_vocab=sample_vocab,
                     logit_bias_PxV=logit_bias_PxV, contrast=contrast, **filters)


@functools.partial(jax.jit, static_argnames=("cfg", "batch", "length", "top_k",
                                             "return_logits", "sample_vocab"))
def _generate(key: Array, params: Params, cfg: TransformerConfig, batch: int, length: int,
              bos_token: int | Array = 0, temperature: float | Array = 1.0, top_k: int = 0,
              top_p: float | Array = 1.0, min_p: float | Array = 0.0,
              return_logits: bool = False, sample_vocab: int = 0,
              logit_bias_PxV: Array | None = None, contrast: Contrast | None = None
              ) -> Array | tuple[Array, Array]:
    """``generate``, jitted (top_p and min_p traced where given)."""
    positions_T = jnp.arange(length)
    u_TxB = jax.vmap(lambda pos: jax.random.uniform(jax.random.fold_in(key, pos),
                                                    (batch,)))(positions_T)

    def rows(u_TxR: Array) -> tuple[Array, Array | None]:
        """The sequences of the rows whose uniforms are ``u_TxR``: (T x R tokens, their
        T x R x V logits or None)."""
        def step(carry: tuple[Cache, Array, tuple[Cache, ...]], at: tuple[Array, Array]
                 ) -> tuple[tuple[Cache, Array, tuple[Cache, ...]],
                            tuple[Array, Array | None]]:
            (cache, token_R, contrast_caches), (pos, u_R) = carry, at
            logits_RxV, _, cache = decode_step(params, cache, token_R, pos, cfg)
            candidates_RxV = logits_RxV[:, :sample_vocab] if sample_vocab else logits_RxV
            if logit_bias_PxV is not None:
                candidates_RxV = candidates_RxV + logit_bias_PxV[token_R]
            if contrast is not None:
                shift_RxV, contrast_caches = _contrast_step(contrast, contrast_caches,
                                                            token_R, pos, sample_vocab)
                # added before the division by the temperature, so that it is added after it
                scale = jnp.maximum(jnp.asarray(temperature, jnp.float32), 0.0)[..., None]
                candidates_RxV = candidates_RxV + scale * shift_RxV
            next_R = sampling.sample_at(u_R, candidates_RxV, temperature, top_k, top_p,
                                        min_p)
            return ((cache, next_R, contrast_caches),
                    (next_R, logits_RxV if return_logits else None))

        rows_R = u_TxR.shape[1]
        token0_R = jnp.full((rows_R,), bos_token, jnp.int32)
        contrast_caches = (() if contrast is None else
                           (init_cache(contrast.cfg, rows_R, length),
                            init_cache(contrast.cfg, rows_R, length)))
        _, out = jax.lax.scan(step, (init_cache(cfg, rows_R, length), token0_R,
                                     contrast_caches),
                              (positions_T, u_TxR))
        return out

    block = row_block(batch)
    if block == batch:
        tokens_TxB, logits_TxBxV = rows(u_TxB)
    else:  # blocks of rows one after another, each sampling all positions
        u_NxTxR = jnp.moveaxis(u_TxB.reshape(length, batch // block, block), 1, 0)
        tokens_NxTxR, logits_NxTxRxV = jax.lax.map(rows, u_NxTxR)
        tokens_TxB = jnp.moveaxis(tokens_NxTxR, 0, 1).reshape(length, batch)
        if return_logits:
            logits_TxBxV = jnp.moveaxis(logits_NxTxRxV, 0, 1).reshape(length, batch, -1)
    tokens_BxT = tokens_TxB.T
    if return_logits:
        return tokens_BxT, jnp.swapaxes(logits_TxBxV, 0, 1)
    return tokens_BxT


def _contrast_step(contrast: Contrast, caches: tuple[Cache, Cache], token_R: Array,
                   pos: Array, sample_vocab: int) -> tuple[Array, tuple[Cache, Cache]]:
    """The contrast's shift ``R x V`` at ``pos`` (after ``token_R``), and its caches."""
    plus_RxV, _, cache_plus = decode_step(contrast.plus, caches[0], token_R, pos, contrast.cfg)
    minus_RxV, _, cache_minus = decode_step(contrast.minus, caches[1], token_R, pos,
                                            contrast.cfg)
    if sample_vocab:
        plus_RxV, minus_RxV = plus_RxV[:, :sample_vocab], minus_RxV[:, :sample_vocab]
    return sampling.contrast(plus_RxV, minus_RxV, contrast.weight), (cache_plus, cache_minus)


CPU_ROW_BLOCK = 1024  # rows per block when sampling on CPU (``row_block``)


def row_block(batch: int) -> int:
    """Rows sampled together: on CPU the largest divisor of ``batch`` up to
    ``CPU_ROW_BLOCK``, which bounds the KV caches' memory (for the ``lm`` benchmark's model,
    131 KB a row: 134 MB for 1024 rows) and the sampler's loop overhead per token;
    elsewhere all of them, which fills an accelerator. 4 lanes x 1024 x 64 tokens of the
    ``lm`` benchmark, warm, on an Intel host: the lanes one after another in one block of
    1024 rows each ran 35.3-36.6k tokens/s against 30.3-33.8k for the vmapped lanes in
    blocks of 256 (and 18.5-29.4k in blocks of 64); on an AMD host, vmapped blocks of 64
    had run 1.2x the tokens/s of 1024 (docs/performance.md)."""
    if jax.default_backend() != "cpu" or batch <= CPU_ROW_BLOCK:
        return batch
    return max(b for b in range(1, CPU_ROW_BLOCK + 1) if batch % b == 0)


CPU_MICROBATCH_BYTES = 2 ** 21  # a training slice's widest activation on CPU ...
CPU_MICROBATCH_MIN_TOKENS = 512  # ... and its fewest tokens


def train_microbatches(cfg: TransformerConfig, batch: int) -> int:
    """How many slices a training minibatch of ``batch`` sequences is taken in
    (``sim.train.sliced_value_and_grad``). On CPU, the fewest that divide ``batch`` and
    keep a slice's widest activation (the MLP's hidden layer or the attention scores,
    float32) within ``CPU_MICROBATCH_BYTES``, so that the activations a slice keeps for
    its backward pass stay in cache, but no slice shorter than
    ``CPU_MICROBATCH_MIN_TOKENS``, below which the products slow down; elsewhere 1, which
    fills an accelerator. Paired on 2 CPU cores (docs/performance.md), ms a lane-step:
    the ``lm`` benchmark's model (64 x 64 tokens, width 128) 44.9 in 4 slices against
    50.0 in one; width 256, 4 layers, 32 x 128 tokens: 294.5 in 8 slices of 512 tokens
    against 363.7 in one, 391.9 in 32 of 128; the default run's model, no difference."""
    if jax.default_backend() != "cpu":
        return 1
    row_bytes = 4 * cfg.context * max(cfg.mlp_ratio * cfg.width, cfg.heads * cfg.context)
    min_rows = min(batch, -(-CPU_MICROBATCH_MIN_TOKENS // cfg.context))
    slices = [m for m in range(1, batch + 1) if batch % m == 0 and batch // m >= min_rows]
    return next((m for m in slices if batch // m * row_bytes <= CPU_MICROBATCH_BYTES),
                slices[-1])


def param_count(params: Params) -> int:
    """Number of scalars in one model's params (a lane-stacked pytree counts all lanes)."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def matmul_weights(cfg: TransformerConfig) -> int:
    """``N_matmul``, the weights used in matrix products: per layer 4 D^2 (q, k, v, out) +
    2 * mlp_ratio * D^2 (MLP), plus the D x V head; embeddings are lookups (0 FLOPs),
    biases and LayerNorms are ignored."""
    d = cfg.width
    return cfg.layers * (4 + 2 * cfg.mlp_ratio) * d * d + d * cfg.vocab_size


def flops_per_token(cfg: TransformerConfig) -> int:
    """Forward FLOPs per token: ``2 * N_matmul + 4 * layers * context * width``.

    The attention term counts both the score (QK^T) and the value (AV) products over the
    full context (as Chinchilla does; Kaplan et al. count one of the two). This dense
    implementation does compute the full L x L scores, so it matches the work done; causal
    masking makes half of it useless. A training step (forward + backward) costs about 3x
    this: ``train_flops_per_token``.
    """
    return 2 * matmul_weights(cfg) + 4 * cfg.layers * cfg.context * cfg.width


def decode_flops(cfg: TransformerConfig, length: int) -> int:
    """Forward FLOPs of sampling one sequence of ``length`` tokens with the key/value cache
    (``generate``): ``length`` one-position steps, step p (from 0) attending to positions
    0..p, so ``2 * N_matmul * length + 4 * layers * width * length (length + 1) / 2``.
    The attention counts the positions attended to, not the cache segments a CPU step
    reads (``cache_segments``), so the count is the same on every backend."""
    attended = length * (length + 1) // 2
    return 2 * matmul_weights(cfg) * length + 4 * cfg.layers * cfg.width * attended


def train_flops_per_token(cfg: TransformerConfig) -> int:
    """Forward + backward FLOPs per token: 3x the forward estimate."""
    return 3 * flops_per_token(cfg)
