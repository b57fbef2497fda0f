"""The generation loop of one chain, as two pure functions of (key, dynamic settings).

``start`` fits generation 0 on real data; ``step`` makes generation g >= 1 from generation
g - 1: the teacher produces data, the mix policy combines it with real data, a student is
fitted, and the student is measured. Keys derive from the lane key with
``fold_in(key, g)``, so a lane's results do not depend on how many lanes run beside it or
on how generations are grouped into compiled calls.

Under ``mix=replace`` and ``mix=accumulate`` a world with sufficient statistics
(``statistics`` and ``fit_statistics``: the closed-form worlds) fits from them: an
accumulating chain keeps their running sum instead of the growing pool (O(n) a generation
rather than O(g n)), and a world that can draw the statistics of its own samples directly
(``sample_statistics``: the Gaussian's, in O(d^2) rather than O(n d)) never materialises
them; under ``mix=replace`` a world that can draw the fit on its own samples directly
(``refit``: the Gaussian's Cholesky factor times a Bartlett factor) skips the statistics
too. Other worlds and policies go through the data.
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
    # Fit lane by lane when the chain's lanes are vmapped (``sim.lanes.sequential_fit``):
    # the other phases stay vmapped.
    sequential_fit: bool = False

    def _fit(self, *args: Any) -> Params:
        fit = self.world.fit
        return (jax.custom_batching.sequential_vmap(fit) if self.sequential_fit else fit)(*args)

    @property
    def summarises(self) -> bool:
        """Whether the chain fits from the world's sufficient statistics, not data."""
        return (self.mix.policy in (MixPolicy.replace, MixPolicy.accumulate)
                and hasattr(self.world, "statistics"))

    def _synthetic_statistics(self, key: Array, params: Params, dyn: Dyn) -> Any:
        n = self.world.n_samples
        if hasattr(self.world, "sample_statistics"):
            return self.world.sample_statistics(key, params, n, dyn)
        return self.world.statistics(self.world.generate(key, params, n, dyn), jnp.ones(n))

    def start(self, key: Array, dyn: Dyn) -> tuple[ChainState, dict[str, Array]]:
        """Generation 0: fit on n real samples, measure."""
        k_real, _, _, k_fit, k_measure = _generation_keys(key, 0)
        real = self.world.sample_real(k_real, self.world.n_samples)
        params = self._fit(k_fit, real, jnp.ones(self.world.n_samples), dyn, None)
        metrics = self.world.measure(k_measure, params, None, dyn)
        if self.mix.policy is MixPolicy.accumulate and self.summarises:
            pool = self.world.statistics(real, jnp.ones(self.world.n_samples))
        else:
            pool = self.mix.init(real)
        return ChainState(params, pool), metrics

    def step(self, state: ChainState, generation: Array, key: Array,
             dyn: Dyn) -> tuple[ChainState, dict[str, Array]]:
        """Generation g >= 1: the previous model teaches, a new model is fitted and measured."""
        k_real, k_synth, k_mix, k_fit, k_measure = _generation_keys(key, generation)
        if self.summarises and self.mix.policy is MixPolicy.replace and hasattr(
                self.world, "refit"):
            pool = state.pool
            params = self.world.refit(k_synth, state.params, self.world.n_samples, dyn)
        elif self.summarises:
            statistics = self._synthetic_statistics(k_synth, state.params, dyn)
            pool = state.pool
            if self.mix.policy is MixPolicy.accumulate:
                pool = statistics = jax.tree.map(jnp.add, state.pool, statistics)
            params = self.world.fit_statistics(statistics)
        else:
            n = self.world.n_samples
            synthetic = self.world.generate(k_synth, state.params, n, dyn)
            real = self.world.sample_real(k_real, n) if self.mix.needs_real else None
            pool, data, weights_N = self.mix(state.pool, k_mix, generation, real, synthetic,
                                             dyn)
            params = self._fit(k_fit, data, weights_N, dyn, state.params)
        metrics = self.world.measure(k_measure, params, state.params, dyn)
        return ChainState(params, pool), metrics
