"""The generation loop of one chain, as three pure functions of (key, dynamic settings).

``start`` fits generation 0 on real data; ``step`` makes generation g >= 1 from generation
g - 1: the teacher produces data, the mix policy combines it with real data, and a student
is fitted; ``measure`` measures generation g's model against its teacher. One ``measure``
serves every generation (one program to compile, not one inside each of ``start`` and
``step``): generation 0, which has no teacher, is measured against itself, and the metrics
that compare with a teacher take the world's ``untaught_metrics`` there. Keys derive from
the lane key with ``fold_in(key, g)``, so a lane's results do not depend on how many lanes
run beside it or on how generations are grouped into compiled calls.

Under ``mix=replace`` and ``mix=accumulate`` a world with sufficient statistics
(``statistics`` and ``fit_statistics``: the closed-form worlds) fits from them: an
accumulating chain keeps their running sum instead of the growing pool (O(n) a generation
rather than O(g n)), and a world that can draw the statistics of its own samples directly
(``sample_statistics``: the Gaussian's, in O(d^2) rather than O(n d)) never materialises
them; under ``mix=replace`` a world that can draw the fit on its own samples directly
(``refit``: the Gaussian's Cholesky factor times a Bartlett factor) skips the statistics
too. Other worlds and policies go through the data.

A filter (``sim.curation``) weighs each generation's synthetic rows before they are mixed,
and an ensemble teacher draws each row from one of its members: under ``accumulate`` the
summarising chain then draws the rows and sums their weighted statistics (never
``sample_statistics`` or ``refit``, which have no rows to filter); under ``replace`` it
fits the weighted rows. A synthetic count schedule (``sim.mix``) masks the rows after the
first n_g in the same way, and the Gaussian's direct draws take n_g as a traced count. The
teacher choice
(``sim.teacher``) decides which model produces the data (and is the fit's and the
measure's ``teacher``); the chain state carries the models it needs besides the newest.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sim.curation import CURATION_INFO, Curation, Filter
from sim.mix import MIX_INFO, Mix, MixPolicy
from sim.teacher import TeacherKind, Teaching
from sim.worlds.base import Array, Data, Dyn, MetricInfo, Params, World


# Recorded where the world counts the FLOPs of its sampling (``generate_flops``).
SAMPLE_FLOPS_INFO = {
    "sample_flops": MetricInfo(
        "FLOPs of the generation's synthetic data", "FLOP",
        "model FLOPs the teacher spent producing the synthetic_count rows it made for "
        "generation g: sampling them (the world's generate_flops: a language model's "
        "decoding with the key/value cache, a defense's passes included; a classifier's "
        "forward pass per input), plus scoring them under filter=self_likelihood; under "
        "mix=fresh the rows whose slots real data fills are counted too, as in "
        "synthetic_count; 0 at generation 0, which learned from real data"),
}


class Lesson(NamedTuple):
    """What one generation's fit learns from: weighted rows and the model teaching them
    (at generation 0 none, or the world's ``untaught_teacher`` stand-in)."""

    data: Data
    weights_N: Array
    teacher: Params | None


class ChainState(NamedTuple):
    params: Params  # the newest generation's model (next generation's teacher by default)
    pool: Any  # the mix policy's state (accumulated data or its statistics, or nothing)
    teachers: Any = ()  # the teacher choice's other models (sim.teacher.Teachers), or ()


def _generation_keys(key: Array, generation: Array | int) -> tuple[Array, ...]:
    return tuple(jax.random.split(jax.random.fold_in(key, generation), 5))


class Chain(NamedTuple):
    world: World
    mix: Mix
    # Sample, fit and measure one lane at a time inside the chain's vmapped lanes
    # (``sim.lanes.lane_by_lane``).
    lane_by_lane: bool = False
    curation: Curation | None = None  # None: filter=none
    teaching: Teaching = Teaching(TeacherKind.previous, 1)

    def _lanewise(self, fn: Any) -> Any:
        """``fn``, run one lane at a time inside vmapped lanes where the chain runs lane by
        lane."""
        return jax.custom_batching.sequential_vmap(fn) if self.lane_by_lane else fn

    @property
    def shares_fit(self) -> bool:
        """Whether every generation's fit can be one compiled program: the chain learns from
        data (not from sufficient statistics) whose shapes are generation 0's (no
        accumulating pool), the previous model teaches (no other models are kept), and the
        world has a stand-in teacher under which its fit computes what it computes with
        none (``untaught_teacher``)."""
        return (not self.summarises and not self.mix.accumulates
                and self.teaching.kind is TeacherKind.previous
                and hasattr(self.world, "untaught_teacher")
                and jax.eval_shape(self.world.untaught_teacher) is not None)

    @property
    def summarises(self) -> bool:
        """Whether the chain fits from the world's sufficient statistics, not data: under
        ``accumulate``, and under ``replace`` where the model's own samples need not be
        drawn (no filter, one teacher); drawn samples are fitted directly (the Gaussian's
        fit from data is the more precise near collapse)."""
        return ((self.mix.policy is MixPolicy.accumulate
                 or (self.mix.policy is MixPolicy.replace and self._own_samples))
                and hasattr(self.world, "statistics"))

    @property
    def _own_samples(self) -> bool:
        """Whether generation g learns from unfiltered samples of one model."""
        return self.curation is None and self.teaching.kind is not TeacherKind.ensemble

    @property
    def metric_info(self) -> dict[str, MetricInfo]:
        """Every metric a generation records: the world's, the curation's, the mix's."""
        return {**self.world.metric_info, **(CURATION_INFO if self.curation else {}),
                **(SAMPLE_FLOPS_INFO if self.counts_sample_flops else {}), **MIX_INFO}

    @property
    def counts_sample_flops(self) -> bool:
        """Whether the world counts its sampling's FLOPs (``sample_flops`` is recorded)."""
        return hasattr(self.world, "generate_flops")

    def sample_flops(self, teacher: Params, generation: Array | int) -> Array:
        """FLOPs of generation g's synthetic data from ``teacher`` (``sample_flops``): its
        n_g rows (``synthetic_count``) sampled and, under ``filter=self_likelihood``,
        scored."""
        per_row = self.world.generate_flops(teacher)
        if self.curation is not None and self.curation.kind is Filter.self_likelihood:
            per_row += self.world.log_likelihood_flops(teacher)
        return jnp.float32(per_row) * jnp.float32(self.mix.synthetic_count(generation))

    def generate(self, key: Array, state: ChainState, dyn: Dyn) -> Data:
        """The teacher's n samples, as the chain draws them (lane by lane where it runs lane
        by lane)."""
        n = self.world.n_samples

        def teach(key: Array, params: Params, teachers: Any, dyn: Dyn) -> Data:
            return self.teaching.generate(self.world, key, params, teachers, n, dyn)

        return self._lanewise(teach)(key, state.params, state.teachers, dyn)

    def _synthetic(self, key: Array, state: ChainState, generation: Array, dyn: Dyn
                   ) -> tuple[Data, Array | None, dict[str, Array]]:
        """The teacher's n samples, their weights (None: all 1; else the first n_g of a
        synthetic count schedule, less what the filter drops) and the curation metrics."""
        synthetic = self.generate(key, state, dyn)
        valid_N = self.mix.synthetic_mask(generation)
        if self.curation is None:
            return synthetic, valid_N, {}
        weights_N, metrics = self.curation(
            jax.random.fold_in(key, 1), synthetic, dyn,
            self.teaching.log_likelihood(self.world, state.params, state.teachers), valid_N)
        return synthetic, weights_N, metrics

    def _synthetic_statistics(self, key: Array, state: ChainState, generation: Array,
                              dyn: Dyn) -> tuple[Any, dict[str, Array]]:
        n = self.world.n_samples
        if self._own_samples and hasattr(self.world, "sample_statistics"):
            teacher = self.teaching.single(state.params, state.teachers)
            count = self.mix.synthetic_count(generation)
            return self.world.sample_statistics(key, teacher, count, dyn), {}
        synthetic, weights_N, metrics = self._synthetic(key, state, generation, dyn)
        weights_N = jnp.ones(n) if weights_N is None else weights_N
        return self.world.statistics(synthetic, weights_N), metrics

    def begin(self, key: Array, dyn: Dyn) -> tuple[Lesson, Any, dict[str, Array]]:
        """Generation 0's lesson (n real samples; the stand-in teacher where the chain
        ``shares_fit``), the mix state after it and the metrics of its (absent) synthetic
        data."""
        n = self.world.n_samples
        real = self.world.sample_real(_generation_keys(key, 0)[0], n)
        if self.mix.policy is MixPolicy.accumulate and self.summarises:
            pool = self.world.statistics(real, jnp.ones(n))
        else:
            pool = self.mix.init(real)
        metrics = {}
        if hasattr(self.world, "served_metrics"):
            metrics = {**metrics, **self.world.served_metrics(None)}
        if self.curation is not None:
            metrics = {**metrics, **self.curation.unfiltered()}
        metrics = {**metrics, "synthetic_count": jnp.float32(0.0)}
        if self.counts_sample_flops:
            metrics["sample_flops"] = jnp.float32(0.0)
        teacher = self.world.untaught_teacher() if self.shares_fit else None
        return Lesson(real, jnp.ones(n), teacher), pool, metrics

    def learn(self, key: Array, generation: Array | int, lesson: Lesson, dyn: Dyn) -> Params:
        """Generation g's model, fitted on its lesson."""
        return self._lanewise(self.world.fit)(_generation_keys(key, generation)[3],
                                              lesson.data, lesson.weights_N, dyn,
                                              lesson.teacher)

    def start(self, key: Array, dyn: Dyn) -> tuple[ChainState, dict[str, Array]]:
        """Generation 0: fit on n real samples; the metrics of its (absent) synthetic data."""
        lesson, pool, metrics = self.begin(key, dyn)
        params = self.learn(key, 0, lesson, dyn)
        return ChainState(params, pool, self.teaching.init(params)), metrics

    def _teacher(self, state: ChainState) -> Params:
        """The model that teaches the next generation (an ensemble's newest member stands
        for it where one model is asked)."""
        teacher = self.teaching.single(state.params, state.teachers)
        return state.params if teacher is None else teacher

    def _counted(self, produced: dict[str, Array], generation: Array, teacher: Params
                 ) -> dict[str, Array]:
        """The metrics of generation g's synthetic data, with its count and cost."""
        produced = {**produced, "synthetic_count": jnp.float32(
            self.mix.synthetic_count(generation))}
        if self.counts_sample_flops:
            produced["sample_flops"] = self.sample_flops(teacher, generation)
        return produced

    def produce(self, state: ChainState, generation: Array, key: Array, dyn: Dyn
                ) -> tuple[Lesson, Any, dict[str, Array]]:
        """Generation g >= 1's lesson from data: the teacher's samples (filtered, mixed
        with real data), the new mix state and the metrics of the synthetic data."""
        k_real, k_synth, k_mix, _, _ = _generation_keys(key, generation)
        synthetic, synthetic_weights_N, produced = self._synthetic(k_synth, state,
                                                                   generation, dyn)
        if hasattr(self.world, "served_metrics"):
            produced = {**self.world.served_metrics(synthetic), **produced}
        n = self.world.n_samples
        real = self.world.sample_real(k_real, n) if self.mix.needs_real else None
        pool, data, weights_N = self.mix(state.pool, k_mix, generation, real, synthetic, dyn,
                                         synthetic_weights_N)
        teacher = self._teacher(state)
        return Lesson(data, weights_N, teacher), pool, self._counted(produced, generation,
                                                                     teacher)

    def step(self, state: ChainState, generation: Array, key: Array,
             dyn: Dyn) -> tuple[ChainState, Params, dict[str, Array]]:
        """Generation g >= 1: the previous model teaches and a new model is fitted. The new
        state, the teacher (for ``measure``) and the metrics of the synthetic data."""
        k_synth = _generation_keys(key, generation)[1]
        teacher = self._teacher(state)
        if (self.summarises and self.mix.policy is MixPolicy.replace
                and hasattr(self.world, "refit")):
            pool, produced = state.pool, self._counted({}, generation, teacher)
            params = self.world.refit(k_synth, teacher, self.mix.synthetic_count(generation),
                                      dyn)
        elif self.summarises:
            statistics, produced = self._synthetic_statistics(k_synth, state, generation, dyn)
            produced, pool = self._counted(produced, generation, teacher), state.pool
            if self.mix.policy is MixPolicy.accumulate:
                pool = statistics = jax.tree.map(jnp.add, state.pool, statistics)
            params = self.world.fit_statistics(statistics)
        else:
            lesson, pool, produced = self.produce(state, generation, key, dyn)
            params = self.learn(key, generation, lesson, dyn)
        teachers = self.teaching.update(state.teachers, params, generation)
        return ChainState(params, pool, teachers), teacher, produced

    def measure(self, key: Array, generation: Array, params: Params, teacher: Params,
                dyn: Dyn) -> dict[str, Array]:
        """The world's metrics of generation g's model, learnt from ``teacher`` (at
        generation 0, which learnt from none, pass the model itself: the metrics in the
        world's ``untaught_metrics`` then take its values)."""
        k_measure = _generation_keys(key, generation)[4]
        metrics = self._lanewise(self.world.measure)(k_measure, params, teacher, dyn)
        if hasattr(self.world, "untaught_metrics"):
            untaught = self.world.untaught_metrics(params)
            metrics = {name: jnp.where(generation == 0, untaught[name], value)
                       if name in untaught else value for name, value in metrics.items()}
        return metrics
