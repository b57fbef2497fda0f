"""What the chain engine needs from a world.

A world owns its real data (a sampler with known truth, or a dataset), the model that is
fitted or trained on data, how a fitted model produces data, and the metrics that measure a
fitted model. Every method is a pure function of its arguments, traceable under ``jit`` and
``vmap``: the engine runs many independent chains ("lanes") in one compiled program.

Data is a pytree whose leaves share a leading sample axis. Fits take per-sample weights
(0/1 masks over a fixed-size pool, so that accumulating pools keep static shapes); a
closed-form fitter uses them as frequency weights, a trained network draws minibatches from
the rows whose weight is non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Protocol

import jax

Array = jax.Array
Data = Any  # pytree of arrays with a shared leading sample axis N
Params = Any  # pytree describing one fitted model
Dyn = Mapping[str, Array]  # dynamic (traced) settings of one lane, e.g. "mix.real_fraction"


@dataclass(frozen=True)
class WorldConfig:
    """Fields every world's config has; each world subclasses it."""

    n_samples: int = 100  # samples per generation (and real samples at generation 0)


class MetricInfo(NamedTuple):
    """How a metric is described in the results dataset and the README.

    A metric is a scalar per lane and generation, or has extra trailing axes named by
    ``dims`` (e.g. ``("n",)`` for distinct-n) with coordinate values ``coords`` (one
    sequence per extra dim; empty = 0, 1, 2, ...).
    """

    long_name: str
    units: str = ""
    description: str = ""
    dims: tuple[str, ...] = ()
    coords: tuple[tuple[Any, ...], ...] = ()


class Relative(NamedTuple):
    """A metric computed after a run from a measured metric's change since generation 0
    (``sim.metrics.retention.relative_to_start``)."""

    of: str  # the measured metric
    kind: str  # ratio: v_g / v_0; likelihood: exp(v_0 - v_g); saving: 1 - v_g / v_0
    info: MetricInfo


# The metric a trained world reports for the divergence check (sim/experiment.py).
TRAIN_LOSS_INFO = MetricInfo(
    "final training loss", "nats",
    "mean minibatch loss over the last tenth of the generation's training steps; a lane "
    "whose loss is NaN, inf or above train.diverged_loss is marked diverged")


class World(Protocol):
    """The interface every world implements (see module docstring)."""

    n_samples: int  # samples produced per generation, and real samples at generation 0
    min_rows: int  # the fewest weighted rows a fit needs
    # On the CPU, the lanes per lax.map batch that measured fastest, or 0 when one wide
    # vmap wins (closed-form fits are cheap per lane and vmap wins; a transformer's may not).
    cpu_lane_batch: int
    # Optional: True where sampling, fitting and measuring one lane at a time beats the
    # vmapped lanes on the CPU (sim.lanes.lane_by_lane); absent = False
    # cpu_lane_by_lane: bool
    metric_info: Mapping[str, MetricInfo]  # every metric ``measure`` returns, in order
    headline: tuple[str, ...]  # metrics printed in the run summary
    # (metric, "ratio" | "likelihood") whose change from generation 0 is the world's
    # retention (sim/metrics/retention.py), or None where the world has no quality score
    retention_of: tuple[str, str] | None
    # Optional: metrics computed after the run from a measured metric's change since
    # generation 0 (e.g. trait_amplification); absent = none
    # relative_metrics: Mapping[str, Relative]
    # Optional: metrics that ``measure`` returns as an intermediate array (e.g. the produced
    # tokens) and that this host (numpy) function of one lane's array finishes after each
    # generation (e.g. gzip's compression ratio); absent = none. Compiled chains then hold
    # no host callback, which would keep them out of the persistent compilation cache.
    # host_metrics: Mapping[str, Callable[[np.ndarray], np.ndarray]]
    # Optional: sufficient statistics, for a fit that depends on its data only through
    # their sum over rows (closed-form fits); under mix=accumulate the chain then keeps
    # their running sum instead of the growing pool. Absent = the pool is kept.
    # statistics(data, weights_N) -> Stats (a pytree, additive over rows)
    # fit_statistics(stats) -> Params (what ``fit`` returns on the data)
    # Optional: the scores that curation filters keep samples by (sim/curation.py); a filter
    # whose score a world lacks is refused before compute. Absent = that filter is refused.
    # truth_log_likelihood(data) -> (N,) log-likelihood of every row under the truth
    # log_likelihood(params, data) -> (N,) log-likelihood of every row under a model
    # Optional: the model FLOPs of producing and scoring synthetic rows, recorded per
    # generation as ``sample_flops`` (sim.chain); absent = not recorded.
    # generate_flops(params) -> int, the FLOPs of each row ``generate`` makes
    # log_likelihood_flops(params) -> int, of ``log_likelihood`` on each row (where a
    # filter scores with it)
    # Optional: metrics of the data a teacher served this generation (its n_samples rows,
    # before any filter), e.g. the watermark in an LM teacher's text; absent = none.
    # served_info: tuple[str, ...] (their names: in metric_info, left out by ``measure``)
    # served_metrics(data | None) -> those metrics (None: generation 0, NaN)
    # Optional, for worlds whose ``measure`` reads its ``teacher``: the chain measures
    # generation 0 against the model itself (one compiled ``measure`` for every
    # generation) and then puts these values in place of those metrics; absent = none.
    # untaught_metrics(params) -> {name: value at generation 0} (NaN for teacher metrics)
    # Optional, for worlds whose ``fit`` may ignore its teacher (e.g. an LM trained on the
    # teacher's text alone): a stand-in teacher, with a real teacher's shapes, under which
    # ``fit`` computes what it computes with None, or None where the fit reads the teacher;
    # the chain then compiles one fit for every generation (``Chain.shares_fit``).
    # untaught_teacher() -> Params | None

    def sample_real(self, key: Array, n: int) -> Data:
        """n samples of real data."""
        ...

    def fit(self, key: Array, data: Data, weights_N: Array, dyn: Dyn,
            teacher: Params | None) -> Params:
        """Fit (or train from a fresh initialisation) a model on weighted data.

        ``teacher`` is the previous generation's model (None at generation 0, whose fit sees
        real data only); a distilling world queries it for soft targets during training.
        """
        ...

    def generate(self, key: Array, params: Params, n: int, dyn: Dyn) -> Data:
        """n samples produced by a fitted model, with the same structure as real data."""
        ...

    def measure(self, key: Array, params: Params, teacher: Params | None,
                dyn: Dyn | None) -> dict[str, Array]:
        """Metrics of one fitted model, keyed as in ``metric_info``.

        ``teacher`` is the model it learned from (None for a model that learnt from none:
        a world whose metrics read the teacher answers with ``measure_untaught``; the chain
        passes the model itself at generation 0); ``dyn`` holds the lane's sampling
        settings, for metrics of the data the model produces (None: the configured
        defaults).
        """
        ...


def measure_untaught(world: World, key: Array, params: Params, dyn: Dyn | None
                     ) -> dict[str, Array]:
    """``world.measure`` of a model that learnt from no teacher: the model measured against
    itself, with the world's ``untaught_metrics`` in place of what that gives."""
    untaught = world.untaught_metrics(params)
    return {name: untaught.get(name, value)
            for name, value in world.measure(key, params, params, dyn).items()}
