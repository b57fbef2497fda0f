"""An MLP classifier in flax.linen with a plain params pytree (vmap-able over lanes).

``apply(params, x_BxF, cfg) -> (logits_BxC, hidden_BxH)``: ``hidden`` is the activation of
the last hidden layer (the input itself when there are no hidden layers), the
representation used for feature distillation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sim.models import draw_params

Array = jax.Array
Params = Any

_ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "tanh": jnp.tanh}


@dataclass(frozen=True)
class MLPConfig:
    """Static architecture: F input features, hidden layer widths, C classes."""

    features: int
    classes: int
    hidden: tuple[int, ...] = (64,)
    activation: str = "relu"

    def __post_init__(self) -> None:
        if not isinstance(self.hidden, tuple):
            object.__setattr__(self, "hidden", tuple(self.hidden))
        sizes = (self.features, self.classes) + self.hidden
        if not all(isinstance(n, int) and n >= 1 for n in sizes):
            raise ValueError(f"MLPConfig sizes must be ints >= 1: {self}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"MLPConfig.activation={self.activation!r}: one of "
                             f"{sorted(_ACTIVATIONS)}")

    @property
    def hidden_width(self) -> int:
        """H: width of the representation returned as ``hidden``."""
        return self.hidden[-1] if self.hidden else self.features


class MLP(nn.Module):
    cfg: MLPConfig

    @nn.compact
    def __call__(self, x_BxF: Array) -> tuple[Array, Array]:
        act = _ACTIVATIONS[self.cfg.activation]
        hidden = x_BxF
        for i, width in enumerate(self.cfg.hidden):
            hidden = act(nn.Dense(width, name=f"dense_{i}")(hidden))
        logits_BxC = nn.Dense(self.cfg.classes, name="head")(hidden)
        return logits_BxC, hidden


@functools.partial(jax.jit, static_argnames="cfg")
def init(key: Array, cfg: MLPConfig) -> Params:
    """Fresh parameters for one model: LeCun-normal kernels (std 1/sqrt(fan_in)), zero
    biases."""
    shapes = jax.eval_shape(MLP(cfg).init, key,
                            jnp.zeros((1, cfg.features), jnp.float32))["params"]

    def leaf_init(names: tuple[str, ...], shape: tuple[int, ...]) -> tuple[float, float]:
        return (0.0, 0.0) if names[-1] == "bias" else (0.0, 1.0 / math.sqrt(shape[0]))

    return draw_params(key, shapes, leaf_init)


@functools.partial(jax.jit, static_argnames="cfg")
def apply(params: Params, x_BxF: Array, cfg: MLPConfig) -> tuple[Array, Array]:
    """Returns ``(logits_BxC, hidden_BxH)``."""
    return MLP(cfg).apply({"params": params}, jnp.asarray(x_BxF, jnp.float32))


def param_count(params: Params) -> int:
    """Number of scalars in one model's params (a lane-stacked pytree counts all lanes)."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def flops_per_example(cfg: MLPConfig) -> int:
    """Forward FLOPs per example: 2 * sum(fan_in * fan_out) over the dense layers
    (biases and activations ignored). Training costs about 3x this."""
    sizes = (cfg.features,) + cfg.hidden + (cfg.classes,)
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def train_flops_per_example(cfg: MLPConfig) -> int:
    """Forward + backward FLOPs per example: 3x the forward estimate."""
    return 3 * flops_per_example(cfg)
