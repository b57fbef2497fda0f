"""The generation loop of one chain, as two pure functions of (key, dynamic settings).

``start`` fits generation 0 on real data; ``step`` makes generation g >= 1 from generation
g - 1: the teacher produces data, the mix policy combines it with real data, a student is
fitted, and the student is measured. Keys derive from the lane key with
``fold_in(key, g)``, so a lane's results do not depend on how many lanes run beside it or
on how generations are grouped into compiled calls.

Under ``mix=accumulate`` a world with sufficient statistics (``statistics`` and
``fit_statistics``, e.g. the closed-form worlds) keeps their running sum instead of the
growing pool, so each generation costs O(n) rather than O(g n); other worlds keep the pool.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sim.mix import Mix, MixPolicy
from sim.worlds.base import Array, Dyn, Params, World


class ChainState(NamedTuple):
    params: Params  # the newest generation's model (next generation's teacher)
    pool: Any  # the mix policy's state (accumulated data or its statistics, or nothing)


def _generation_keys(key: Array, generation: Array | int) -> tuple[Array, ...]:
    return tuple(jax.random.split(jax.random.fold_in(key, generation), 5))


class Chain(NamedTuple):
    world: World
    mix: Mix

    @property
    def summarises(self) -> bool:
        """Whether the chain accumulates the world's sufficient statistics, not a pool."""
        return self.mix.policy is MixPolicy.accumulate and hasattr(self.world, "statistics")

    def start(self, key: Array, dyn: Dyn) -> tuple[ChainState, dict[str, Array]]:
        """Generation 0: fit on n real samples, measure."""
        k_real, _, _, k_fit, k_measure = _generation_keys(key, 0)
        real = self.world.sample_real(k_real, self.world.n_samples)
        params = self.world.fit(k_fit, real, jnp.ones(self.world.n_samples), dyn, None)
        metrics = self.world.measure(k_measure, params, None, dyn)
        pool = (self.world.statistics(real, jnp.ones(self.world.n_samples)) if self.summarises
                else self.mix.init(real))
        return ChainState(params, pool), metrics

    def step(self, state: ChainState, generation: Array, key: Array,
             dyn: Dyn) -> tuple[ChainState, dict[str, Array]]:
        """Generation g >= 1: the previous model teaches, a new model is fitted and measured."""
        k_real, k_synth, k_mix, k_fit, k_measure = _generation_keys(key, generation)
        n = self.world.n_samples
        synthetic = self.world.generate(k_synth, state.params, n, dyn)
        real = self.world.sample_real(k_real, n) if self.mix.needs_real else None
        if self.summarises:
            pool = jax.tree.map(jnp.add, state.pool,
                                self.world.statistics(synthetic, jnp.ones(n)))
            params = self.world.fit_statistics(pool)
        else:
            pool, data, weights_N = self.mix(state.pool, k_mix, generation, real, synthetic,
                                             dyn)
            params = self.world.fit(k_fit, data, weights_N, dyn, state.params)
        metrics = self.world.measure(k_measure, params, state.params, dyn)
        return ChainState(params, pool), metrics
