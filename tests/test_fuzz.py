"""Config fuzzing: random overrides of the categorical world (fast, and it reads every
sampling setting). Valid ones run a small chain to a well-formed Dataset; a value of the
wrong type is refused when the config is composed, a value out of range when the
experiment is built (before anything runs), each naming its key."""

from __future__ import annotations

import functools

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from sim import experiment
from sim.cli import CONF_DIR
from sim.config import register_configs, to_config
from sim.errors import ConfigError


def floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False).map(lambda x: round(x, 3))


# key: (valid values, out-of-range values); every value below is of the key's type
RANGES = {
    "generations": (st.integers(0, 2), st.integers(-3, -1)),
    "seeds": (st.integers(1, 3), st.integers(-2, 0)),
    "world.n_samples": (st.integers(20, 60), st.integers(-5, 0)),
    "world.vocab_size": (st.integers(2, 24), st.integers(-2, 1)),
    "world.zipf_exponent": (floats(0, 2), floats(-2, -0.01)),
    "world.smoothing": (floats(0, 1), floats(-1, -0.01)),
    "sampling.temperature": (floats(0, 2), floats(-2, -0.01)),
    "sampling.top_k": (st.integers(0, 30), st.integers(-5, -1)),
    "sampling.top_p": (floats(0.01, 1), st.one_of(floats(-1, 0), floats(1.01, 3))),
    "sampling.min_p": (floats(0, 0.99), floats(1.01, 3)),
    "mix.real_fraction": (floats(0, 1), st.one_of(floats(-1, -0.01), floats(1.01, 2))),
}
INTEGER_KEYS = [key for key in RANGES if key in ("generations", "seeds", "world.n_samples",
                                                 "world.vocab_size", "sampling.top_k")]


@st.composite
def overrides(draw) -> tuple[list[str], set[str], set[str]]:
    """Up to 5 keys, at most one of them given a bad value: (overrides, the key if its
    value is out of range, the key if its value has the wrong type)."""
    keys = draw(st.lists(st.sampled_from(sorted(RANGES)), min_size=1, max_size=5,
                         unique=True))
    bad = draw(st.sampled_from([None, *keys]))
    kind = draw(st.sampled_from(["out_of_range", "out_of_range", "mistyped"]))
    out_of_range, mistyped, given = set(), set(), []
    for key in keys:
        valid, invalid = RANGES[key]
        if key != bad:
            value = draw(valid)
        elif kind == "mistyped":
            value = draw(st.sampled_from(["abc", "1.5"] if key in INTEGER_KEYS else ["abc"]))
            mistyped.add(key)
        else:
            value = draw(invalid)
            out_of_range.add(key)
        given.append(f"{key}={value}")
    mix = "fresh" if "mix.real_fraction" in keys else draw(st.sampled_from(
        ["replace", "accumulate"]))
    return ["world=categorical", f"mix={mix}", "progress=false", *given], out_of_range, mistyped


def compose_untyped(given: list[str]) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=given)


def compose_config(given: list[str]):
    return to_config(compose_untyped(given))


@functools.cache
def _categorical(mix: str) -> DictConfig:
    return compose_untyped(["world=categorical", f"mix={mix}"])


@settings(max_examples=5, deadline=None, derandomize=True)
@given(data=st.data())
def test_every_out_of_range_value_is_refused_before_compute_naming_its_key(data):
    """Each key's out-of-range value set on a composed config (composing is the slow part,
    0.2 s; the random overrides below go through it)."""
    for key, (_, invalid) in RANGES.items():
        value = data.draw(invalid)
        cfg = _categorical("fresh" if key == "mix.real_fraction" else "replace").copy()
        OmegaConf.update(cfg, key, value, merge=False)
        try:
            experiment.build(to_config(cfg))
        except ConfigError as error:
            assert "\n" not in str(error) and f"{key}=" in str(error), str(error)
        else:
            raise AssertionError(f"{key}={value} was accepted")


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(overrides())
def test_random_overrides_run_or_are_refused_naming_a_bad_key(drawn):
    given, out_of_range, mistyped = drawn
    try:
        cfg = compose_config(given)
    except ConfigCompositionException as error:
        assert mistyped, f"{given}: refused though every value has its key's type: {error}"
        assert any(key in str(error) for key in mistyped), str(error)
        return
    assert not mistyped, f"{given}: accepted a value of the wrong type"
    try:
        built = experiment.build(cfg)
    except ConfigError as error:
        assert out_of_range, f"{given}: refused though every value is in range: {error}"
        message = str(error)
        assert "\n" not in message and any(f"{key}=" in message for key in out_of_range), \
            message
        return
    assert not out_of_range, f"{given}: accepted out-of-range values of {out_of_range}"
    ds = experiment.run(built)
    assert ds.sizes["generation"] == cfg.generations + 1 and ds.sizes["seed"] == cfg.seeds
    kl = ds.kl_to_truth.values
    assert np.all(np.isfinite(kl) | np.isposinf(kl)) and np.all(kl >= 0), kl
