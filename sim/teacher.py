"""Who teaches generation g: the previous model, the original one, or an ensemble.

- ``previous`` (default): generation g - 1's model.
- ``original``: generation 0's model (fitted on real data) teaches every generation, so
  errors cannot compound: every generation g >= 1 is one refit away from generation 0.
- ``ensemble``: the average of the probabilities of the last ``teacher.window`` = m
  generations' models (fewer while fewer exist: generations max(0, g - m) .. g - 1). Each
  sample is drawn from a member chosen uniformly at random, which is exactly a draw from
  the mixture (1/m) sum_j p_j: the average of the members' probabilities (of their
  sampling distributions, where sampling settings transform them). Only for worlds whose
  models are fitted to samples (no student queries its teacher's outputs).

The chain carries the extra models with static shapes (``Teachers``): the original model,
or a ring buffer of m models (slot g mod m holds generation g's) and how many are filled.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from sim.errors import require
from sim.worlds.base import Array, Data, Dyn, Params


class TeacherKind(str, enum.Enum):
    previous = "previous"
    original = "original"
    ensemble = "ensemble"


@dataclass(frozen=True)
class TeacherConfig:
    kind: TeacherKind = TeacherKind.previous
    window: int = 2  # ensemble: m, the number of latest generations averaged


class Teachers(NamedTuple):
    """The models a chain keeps for teaching besides the newest (static shapes)."""

    members: Params  # original: generation 0's model; ensemble: m models stacked (ring)
    filled: Array  # ensemble: how many slots hold a model (int32); else 0


def member(members: Params, slot: Array) -> Params:
    return jax.tree.map(lambda x: x[slot], members)


@dataclass(frozen=True)
class Teaching:
    """A teacher choice for one chain."""

    kind: TeacherKind
    window: int

    def init(self, params: Params) -> Teachers | tuple:
        """What the chain keeps after generation 0 (nothing for ``previous``)."""
        if self.kind is TeacherKind.previous:
            return ()
        if self.kind is TeacherKind.original:
            return Teachers(params, jnp.int32(0))
        ring = jax.tree.map(lambda x: jnp.broadcast_to(x, (self.window,) + x.shape), params)
        return Teachers(ring, jnp.int32(1))

    def update(self, teachers: Teachers | tuple, params: Params,
               generation: Array) -> Teachers | tuple:
        """Keep generation g's model ``params`` where the choice needs it."""
        if self.kind is not TeacherKind.ensemble:
            return teachers
        slot = generation % self.window
        ring = jax.tree.map(lambda r, x: r.at[slot].set(x), teachers.members, params)
        return Teachers(ring, jnp.minimum(teachers.filled + 1, self.window))

    def single(self, newest: Params, teachers: Teachers | tuple) -> Params | None:
        """The one model that teaches (None for an ensemble)."""
        if self.kind is TeacherKind.previous:
            return newest
        if self.kind is TeacherKind.original:
            return teachers.members
        return None

    def generate(self, world: Any, key: Array, newest: Params, teachers: Teachers | tuple,
                 n: int, dyn: Dyn) -> Data:
        """n samples of the teacher (of the ensemble's mixture: a uniform member each)."""
        teacher = self.single(newest, teachers)
        if teacher is not None:
            return world.generate(key, teacher, n, dyn)
        k_member, k_draw = jax.random.split(key)
        member_N = jax.random.randint(k_member, (n,), 0, teachers.filled)
        drawn = jax.vmap(lambda p, k: world.generate(k, p, n, dyn))(
            teachers.members, jax.random.split(k_draw, self.window))  # (m, n, ...)
        return jax.tree.map(lambda x: x[member_N, jnp.arange(n)], drawn)

    def log_likelihood(self, world: Any, newest: Params, teachers: Teachers | tuple
                       ) -> Callable[[Data], Array] | None:
        """The teacher's log-likelihood of rows of data (N,), where the world has one."""
        if not hasattr(world, "log_likelihood"):
            return None
        teacher = self.single(newest, teachers)
        if teacher is not None:
            return functools.partial(world.log_likelihood, teacher)
        return functools.partial(_mixture_log_likelihood, world, teachers, self.window)


def _mixture_log_likelihood(world: Any, teachers: Teachers, window: int,
                            x: Data) -> Array:
    """log (1/k) sum_j p_j(x) over the k filled members of an ensemble (N,)."""
    logp_MxN = jax.vmap(lambda p: world.log_likelihood(p, x))(teachers.members)
    filled_M = jnp.arange(window) < teachers.filled
    logp_MxN = jnp.where(filled_M[:, None], logp_MxN, -jnp.inf)
    return jax.nn.logsumexp(logp_MxN, axis=0) - jnp.log(teachers.filled)


def make_teaching(cfg: TeacherConfig, world_name: str, distils: bool) -> Teaching:
    """Validate a teacher config and build the choice."""
    require(cfg.window >= 1, "teacher.window", cfg.window, "an integer >= 1")
    require(cfg.kind is not TeacherKind.ensemble or not distils, "teacher.kind", cfg.kind,
            f"previous or original in the world {world_name!r}, whose students query one "
            "teacher's outputs (ensemble: only where models are fitted to samples: "
            "categorical, gaussian, gmm, linreg)")
    return Teaching(cfg.kind, cfg.window)
