"""How a student learns from its teacher: objective, sampling, training and student size.

These settings matter to trained (neural) worlds; closed-form worlds fit samples by maximum
likelihood and reject anything but their defaults (``check_closed_form``). The scalar
settings listed in ``dynamic_settings`` are traced arrays inside the compiled chain, so
they can later be swept as lanes without recompiling.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any, Mapping

from sim.errors import require
from sim.objectives import LossHParams


class Objective(str, enum.Enum):
    hard = "hard"  # cross-entropy on the teacher's sampled outputs (sequence-level KD)
    soft = "soft"  # Hinton KD: alpha CE(labels) + (1 - alpha) tau^2 KL(teacher_tau || student_tau)
    topk = "topk"  # only the teacher's top-k log-probabilities are visible
    reverse_kl = "reverse_kl"  # KL(student || teacher)
    jsd = "jsd"  # generalised Jensen-Shannon with beta (0 = forward KL, 1 = reverse KL)
    feature = "feature"  # FitNets: hidden-state MSE through a learned projection + soft loss
    on_policy = "on_policy"  # GKD: the teacher scores the student's own samples


class Missing(str, enum.Enum):
    renormalise = "renormalise"  # renormalise the visible top-k mass
    uniform = "uniform"  # spread the missing mass uniformly over the other tokens


@dataclass(frozen=True)
class DistillConfig:
    objective: Objective = Objective.hard
    alpha: float = 0.0  # soft, feature: weight of cross-entropy on the sampled labels
    tau: float = 1.0  # soft, feature: distillation temperature
    top_k: int = 5  # topk: log-probabilities visible per position
    missing: Missing = Missing.renormalise  # topk: what happens to the invisible mass
    beta: float = 0.5  # jsd, on_policy: JSD interpolation
    feature_weight: float = 1.0  # feature: weight of the hidden-state MSE
    on_policy_fraction: float = 0.5  # on_policy: lambda, share of batches the student samples


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    cosine: bool = False  # cosine decay of the learning rate to 0 over the steps
    diverged_loss: float = 1000.0  # a lane whose final loss is above this (or NaN) diverged


@dataclass(frozen=True)
class StudentConfig:
    """Student size relative to the teacher; 0 (or empty) keeps the teacher's value."""

    width: int = 0  # transformer width
    layers: int = 0  # transformer layers
    heads: int = 0  # transformer heads
    hidden: tuple[int, ...] = ()  # MLP hidden sizes


def decoding(sampling: SamplingConfig, dyn: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for ``sim.sampling``: the lane's traced temperature, top-p and
    min-p (the configured values where ``dyn`` is None) and the static top-k. A filter that
    is off in the config is passed as a static Python value, so that ``sim.sampling`` skips
    its sorts: every lane of a run shares these settings (a per-lane sweep of top-p or
    min-p must switch the filter on in the config)."""
    dyn = {} if dyn is None else dyn
    return {"temperature": dyn.get("sampling.temperature", sampling.temperature),
            "top_k": sampling.top_k,
            "top_p": 1.0 if sampling.top_p >= 1.0 else dyn.get("sampling.top_p",
                                                                sampling.top_p),
            "min_p": 0.0 if sampling.min_p <= 0.0 else dyn.get("sampling.min_p",
                                                                sampling.min_p)}


def loss_name(distill: DistillConfig) -> str:
    """The ``sim.objectives.OBJECTIVES`` entry an objective trains with (on-policy batches
    are scored with the JSD)."""
    if distill.objective is Objective.topk and distill.missing is Missing.uniform:
        return "topk_uniform"
    if distill.objective is Objective.on_policy:
        return "jsd"
    return distill.objective.value


def loss_hparams(dyn: Mapping[str, Any]) -> LossHParams:
    """The loss hyperparameters of a lane, from its traced dynamic settings."""
    return LossHParams(alpha=dyn["distill.alpha"], tau=dyn["distill.tau"],
                       beta=dyn["distill.beta"], gamma=dyn["distill.feature_weight"])


def dynamic_settings(distill: DistillConfig, sampling: SamplingConfig,
                     train: TrainConfig) -> dict[str, float]:
    """The scalar settings that are traced inside the chain, keyed by config key."""
    return {
        "sampling.temperature": sampling.temperature,
        "sampling.top_p": sampling.top_p,
        "sampling.min_p": sampling.min_p,
        "distill.alpha": distill.alpha,
        "distill.tau": distill.tau,
        "distill.beta": distill.beta,
        "distill.feature_weight": distill.feature_weight,
        "distill.on_policy_fraction": distill.on_policy_fraction,
        "train.lr": train.lr,
        "train.weight_decay": train.weight_decay,
    }


def validate(distill: DistillConfig, sampling: SamplingConfig, train: TrainConfig,
             student: StudentConfig) -> None:
    """One-line errors for values outside their ranges."""
    require(0 <= distill.alpha <= 1, "distill.alpha", distill.alpha, "a float in [0, 1]")
    require(distill.tau > 0, "distill.tau", distill.tau, "a positive float")
    require(distill.top_k >= 1, "distill.top_k", distill.top_k, "an integer >= 1")
    require(0 <= distill.beta <= 1, "distill.beta", distill.beta, "a float in [0, 1]")
    require(distill.feature_weight >= 0, "distill.feature_weight", distill.feature_weight,
            "a float >= 0")
    require(0 <= distill.on_policy_fraction <= 1, "distill.on_policy_fraction",
            distill.on_policy_fraction, "a float in [0, 1]")
    require(sampling.temperature >= 0, "sampling.temperature", sampling.temperature,
            "a float >= 0 (0 = greedy)")
    require(sampling.top_k >= 0, "sampling.top_k", sampling.top_k, "an integer >= 0 (0 = off)")
    require(0 < sampling.top_p <= 1, "sampling.top_p", sampling.top_p, "a float in (0, 1]")
    require(0 <= sampling.min_p <= 1, "sampling.min_p", sampling.min_p, "a float in [0, 1]")
    require(train.steps >= 1, "train.steps", train.steps, "an integer >= 1")
    require(train.batch_size >= 1, "train.batch_size", train.batch_size, "an integer >= 1")
    require(train.lr > 0, "train.lr", train.lr, "a positive float")
    require(train.weight_decay >= 0, "train.weight_decay", train.weight_decay, "a float >= 0")
    require(train.diverged_loss > 0, "train.diverged_loss", train.diverged_loss,
            "a positive float (nats)")
    require(0 <= train.warmup_steps < train.steps, "train.warmup_steps", train.warmup_steps,
            f"an integer in [0, train.steps={train.steps})")
    for name in ("width", "layers", "heads"):
        value = getattr(student, name)
        require(value >= 0, f"student.{name}", value, "an integer >= 0 (0 = as the teacher)")
    require(all(h >= 1 for h in student.hidden), "student.hidden", list(student.hidden),
            "positive layer sizes, or empty (= as the teacher)")


def check_closed_form(world: str, distill: DistillConfig, sampling: SamplingConfig,
                      student: StudentConfig) -> None:
    """Closed-form worlds fit samples by maximum likelihood at temperature 1."""
    for group, cfg in (("distill", distill), ("sampling", sampling), ("student", student)):
        default = type(cfg)()
        for f in fields(cfg):
            value, allowed = getattr(cfg, f.name), getattr(default, f.name)
            shown = allowed.value if isinstance(allowed, enum.Enum) else allowed
            require(value == allowed, f"{group}.{f.name}", value,
                    f"only the default {shown!r} in the closed-form world {world!r}, whose "
                    "model is fitted to samples by maximum likelihood")
