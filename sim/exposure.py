"""What a teacher exposes to its student, and the defense it puts on it.

The distillation debate turns on what a teacher's API reveals: its full logits, the top-k
log-probabilities that commercial APIs return (at the API's own temperature), or text
alone; and on how labs perturb what they expose. ``expose`` turns a teacher's logits into
the log-probabilities a student's objective sees:

- ``full_logits``: the teacher's log-softmax (today's behaviour, the default);
- ``topk_logprobs``: the top ``exposure.top_k`` log-probabilities of softmax(logits /
  ``exposure.temperature``) (all of them where there are no more outcomes), the missing
  mass renormalised away or spread uniformly;
- ``text_only``: nothing (objectives that need the teacher's probabilities are refused;
  ``hard`` learns from the sampled text).

``defense=logit_noise`` adds Gaussian noise of std ``defense.noise_scale`` to every exposed
log-probability (the visible top k only, under ``topk_logprobs``) before it is normalised
again: a lab's cheapest poisoning of what it reveals.

``defense=watermark`` is the green-list watermark of Kirchenbauer et al. (2023)
(``sim.watermark``: ``defense.gamma``, ``defense.delta``, ``defense.key``): the teacher
serves the biased distribution, in its sampled text and in the probabilities it exposes.
It needs text, so only the LM worlds take it; it acts on text, so it also runs with
``distill=hard`` and ``exposure=text_only``.

``defense=antidistillation`` is antidistillation sampling (Savani et al. 2025;
``sim.antidistillation``: ``defense.lam``, ``defense.epsilon``, the proxy's
``defense.proxy_*``): the teacher's sampling logits are shifted by ``lam`` times a finite
difference of a small proxy student's log-probabilities along the gradient of the proxy's
loss on real text. Like the watermark it acts on the served distribution (text and exposed
probabilities), in the LM worlds only, under every objective and exposure. (``lambda`` is a
Python keyword, so the strength is ``lam``, as in the paper's code.)

The strengths ``defense.noise_scale``, ``defense.delta`` and ``defense.lam`` are traced
settings
(``defense_settings``): a grid sweeps them as lanes of one program. ``strength`` reads a
lane's value. In the LM worlds ``defense.teachers = k > 0`` has only the first k teachers
(generations 0..k-1) defend, so that a study sees how a mark fades once the later
distillers stop adding it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping

import jax

from sim.distill import Missing, Objective
from sim.errors import require
from sim.objectives import topk_target

Array = jax.Array
MAX_API_TOP_K = 20  # what commercial APIs return at most


class Regime(str, enum.Enum):
    full_logits = "full_logits"
    topk_logprobs = "topk_logprobs"
    text_only = "text_only"


class Defense(str, enum.Enum):
    none = "none"
    logit_noise = "logit_noise"
    watermark = "watermark"
    antidistillation = "antidistillation"


@dataclass(frozen=True)
class ExposureConfig:
    regime: Regime = Regime.full_logits
    top_k: int = 5  # topk_logprobs: log-probabilities returned per position (1..20)
    missing: Missing = Missing.renormalise  # topk_logprobs: the mass beyond the top k
    temperature: float = 1.0  # topk_logprobs: the API's temperature before it reports


# The defenses that act on the text a teacher samples (LM worlds only), and why.
TEXT_DEFENSES = {
    Defense.watermark: "the watermark marks text",
    Defense.antidistillation: "antidistillation sampling shifts how the teacher samples text",
}


@dataclass(frozen=True)
class DefenseConfig:
    kind: Defense = Defense.none
    noise_scale: float = 0.0  # logit_noise: std of the noise on each exposed log-probability
    gamma: float = 0.25  # watermark: share of green tokens (also the detector's, always on)
    delta: float = 2.0  # watermark: logit bias on the green tokens
    key: int = 0  # seeds the defender: the watermark's green lists, the antidistillation proxy
    teachers: int = 0  # LM worlds: only the first k teachers (generations 0..k-1) defend; 0: all
    lam: float = 0.0  # antidistillation: lambda, weight of the proxy's finite difference
    epsilon: float = 1e-2  # antidistillation: finite-difference step along the proxy's gradient
    proxy_width: int = 32  # antidistillation: the proxy student transformer's width ...
    proxy_layers: int = 1  # ... layers ...
    proxy_heads: int = 2  # ... and heads
    proxy_steps: int = 200  # antidistillation: AdamW steps training the proxy on real text
    proxy_sequences: int = 256  # antidistillation: real sequences it trains on (and as many
    # more, fresh, for the gradient of its loss)


# The objectives that can learn under each regime: text alone teaches only hard labels;
# features need hidden states; distill=topk is its own top-k exposure of full logits.
ALLOWED = {
    Regime.full_logits: tuple(Objective),
    Regime.topk_logprobs: (Objective.hard, Objective.soft, Objective.reverse_kl,
                           Objective.jsd, Objective.on_policy),
    Regime.text_only: (Objective.hard,),
}


def validate(exposure: ExposureConfig, defense: DefenseConfig, objective: Objective,
             world: str, distils: bool, text: bool = False) -> None:
    """One-line errors for settings out of range and for combinations that mean nothing
    (``distils``: the world's students query their teacher; ``text``: its teachers write
    token sequences)."""
    if not distils:
        for key, value, default in (("exposure.regime", exposure.regime, Regime.full_logits),
                                    ("defense.kind", defense.kind, Defense.none)):
            require(value == default, key, value, f"only {default.value!r} in the world "
                    f"{world!r}, whose models are fitted to samples (no teacher is queried)")
    require(1 <= exposure.top_k <= MAX_API_TOP_K, "exposure.top_k", exposure.top_k,
            f"an integer in [1, {MAX_API_TOP_K}] (what APIs return)")
    require(exposure.temperature > 0, "exposure.temperature", exposure.temperature,
            "a positive float")
    check_strengths(defense)
    require(0 < defense.gamma < 1, "defense.gamma", defense.gamma, "a fraction in (0, 1)")
    require(defense.teachers >= 0, "defense.teachers", defense.teachers,
            "an integer >= 0 (0 = every teacher defends)")
    require(defense.teachers == 0 or text, "defense.teachers", defense.teachers,
            f"0 in the world {world!r} (only the LM worlds count their teachers)")
    if defense.kind in TEXT_DEFENSES:
        require(text, "defense.kind", defense.kind,
                f"none or logit_noise in the world {world!r}: {TEXT_DEFENSES[defense.kind]} "
                "(only the LM worlds markov_lm and text)")
    if defense.kind is Defense.antidistillation:
        check_proxy(defense)
    allowed = ALLOWED[exposure.regime]
    require(objective in allowed, "distill.objective", objective,
            f"with exposure={exposure.regime.value} one of "
            f"{', '.join(o.value for o in allowed)}")
    require(not (exposure.regime is Regime.topk_logprobs and objective is Objective.reverse_kl
                 and exposure.missing is Missing.renormalise), "exposure.missing",
            exposure.missing, "uniform with distill=reverse_kl (a renormalised top k gives "
            "the other tokens probability 0, and KL(student || teacher) is infinite)")
    if objective is Objective.hard or exposure.regime is Regime.text_only:
        require(defense.kind is not Defense.logit_noise, "defense.kind", defense.kind,
                f"none, watermark or antidistillation with distill={objective.value} "
                f"exposure={exposure.regime.value}: the student never sees the teacher's "
                "probabilities")


def check_strengths(defense: DefenseConfig) -> None:
    """One-line errors for the traced strengths (checked per grid point)."""
    require(defense.noise_scale >= 0, "defense.noise_scale", defense.noise_scale,
            "a float >= 0")
    require(defense.delta >= 0, "defense.delta", defense.delta, "a float >= 0")
    require(defense.lam >= 0, "defense.lam", defense.lam,
            "a float >= 0 (antidistillation's lambda; 0 = the teacher's own sampling)")


def check_proxy(defense: DefenseConfig) -> None:
    """One-line errors for antidistillation's static settings (its proxy and step)."""
    require(defense.epsilon > 0, "defense.epsilon", defense.epsilon,
            "a positive float (the finite-difference step)")
    for name in ("proxy_width", "proxy_layers", "proxy_heads", "proxy_sequences"):
        value = getattr(defense, name)
        require(value >= 1, f"defense.{name}", value, "an integer >= 1")
    require(defense.proxy_width % defense.proxy_heads == 0, "defense.proxy_heads",
            defense.proxy_heads, f"a divisor of defense.proxy_width={defense.proxy_width}")
    require(defense.proxy_steps >= 0, "defense.proxy_steps", defense.proxy_steps,
            "an integer >= 0 (0 = an untrained proxy)")


def defense_settings(defense: DefenseConfig) -> dict[str, float]:
    """The defense's traced settings, keyed by config key."""
    return {"defense.noise_scale": defense.noise_scale, "defense.delta": defense.delta,
            "defense.lam": defense.lam}


def strength(defense: DefenseConfig, dyn: Mapping[str, Any] | None, name: str) -> Any:
    """A lane's traced ``defense.<name>`` (the configured value where ``dyn`` lacks it)."""
    return (dyn or {}).get(f"defense.{name}", getattr(defense, name))


def expose(key: Array | None, teacher_logits_xV: Array, exposure: ExposureConfig,
           defense: DefenseConfig, noise_scale: Array | float | None = None) -> Array:
    """The log-probabilities ``[..., V]`` of the teacher that a student's objective sees
    (``key`` draws the defense's noise, of std ``noise_scale``, the lane's traced value;
    default ``defense.noise_scale``; unused without noise). A watermark's bias is already
    in the logits (``sim.watermark.biased_logits``)."""
    vocab = teacher_logits_xV.shape[-1]
    if exposure.regime is Regime.full_logits and not noisy(defense):
        return teacher_logits_xV  # log-probabilities up to a constant: every objective's
        # log-softmax makes them so, as before exposure settings existed
    if exposure.regime is Regime.topk_logprobs:
        logprobs_xV = jax.nn.log_softmax(teacher_logits_xV / exposure.temperature, axis=-1)
        values_xK, indices_xK = jax.lax.top_k(logprobs_xV, min(exposure.top_k, vocab))
        values_xK = _noisy(key, values_xK, defense, noise_scale)
        return topk_target(values_xK, indices_xK, vocab, exposure.missing.value)
    logprobs_xV = jax.nn.log_softmax(teacher_logits_xV, axis=-1)
    return jax.nn.log_softmax(_noisy(key, logprobs_xV, defense, noise_scale), axis=-1)


def noisy(defense: DefenseConfig) -> bool:
    """Whether the defense draws noise (so the loss needs a key): logit_noise at any
    strength, 0 included, so that every lane of a swept ``defense.noise_scale`` draws its
    minibatches as a run of that value alone does."""
    return defense.kind is Defense.logit_noise


def _noisy(key: Array | None, logprobs: Array, defense: DefenseConfig,
           noise_scale: Array | float | None) -> Array:
    if not noisy(defense):
        return logprobs
    scale = defense.noise_scale if noise_scale is None else noise_scale
    return logprobs + scale * jax.random.normal(key, logprobs.shape)
