"""The text world: a byte-level LM of a file the test writes; clear errors on bad paths."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

import commands
from sim import experiment
from sim.config import Config
from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
from sim.errors import ConfigError
from sim.worlds import make_world
from sim.worlds.lm import Trait
from sim.worlds.text import TextConfig, plant_trait, trait_share

SENTENCE = "The quick brown fox jumps over the lazy dog; naïve café — 12 345.\n"


def _text(tmp_path: Path, text: str = SENTENCE * 60, name: str = "corpus.txt") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _cfg(path: str, **kw) -> TextConfig:
    return TextConfig(path=path, **{**dict(n_samples=64, seq_len=16, width=16, layers=1,
                                           heads=2, eval_sequences=16), **kw})


def _make(cfg: TextConfig):
    return make_world(cfg, DistillConfig(), SamplingConfig(), TrainConfig(), StudentConfig())


def test_windows_come_from_the_training_split_and_metrics_from_the_held_out_one(tmp_path):
    text = "".join(f"line {i:04d}: {SENTENCE}" for i in range(40))
    raw = text.encode("utf-8")
    world = _make(_cfg(_text(tmp_path, text), holdout=0.25))
    cut = len(raw) - round(0.25 * len(raw))
    windows = np.asarray(jax.jit(world.sample_real, static_argnums=1)(jax.random.key(0), 50))
    assert windows.shape == (50, 16) and windows.dtype == np.int32
    for row in windows:
        assert bytes(row.astype(np.uint8)) in raw[:cut]
    evals = np.asarray(world.eval_ExL)
    assert evals.shape == (16, 16)
    for row in evals:
        assert bytes(row.astype(np.uint8)) in raw[cut:]
    assert evals[0].tobytes() != evals[-1].tobytes()


def test_plant_trait_inserts_the_continuation_after_a_share_of_the_triggers():
    trait = Trait(tuple(b"ab"), tuple(b"!"), 0.5)
    data = np.frombuffer(b"ab x ab! ab y ab z ab", np.uint8)  # 5 triggers, 1 followed
    planted = plant_trait(data, trait, np.random.default_rng(0))
    assert trait_share(data, trait) == (5, 1) and trait_share(planted, trait) == (5, 2)
    assert len(planted) == len(data) + 1  # round(0.5 * 5) - 1 = 1 insertion
    assert bytes(planted).replace(b"ab!", b"ab") == bytes(data).replace(b"ab!", b"ab")
    assert plant_trait(data, Trait(tuple(b"ab"), tuple(b"!"), 0.2), None) is data


def test_a_short_chain_learns_the_text(tmp_path):
    # with a planted trait: "the very lazy dog" in 60% of the sentences
    world = _cfg(_text(tmp_path), trait_trigger="the ", trait_continuation="very ",
                 trait_rate=0.6)
    cfg = Config(world=world, generations=1, seeds=1, progress=False,
                 train=TrainConfig(steps=60, batch_size=16, lr=1e-2))
    built = experiment.build(cfg)
    text_world = built.chain.world
    train_text = bytes(np.asarray(text_world.train_bytes))
    assert train_text.count(b"the very lazy") / train_text.count(b"the ") == pytest.approx(
        round(0.6 * 54) / 54)  # 54 sentences in the training part
    assert "real data: 0.5926" in text_world.metric_info["trait_rate"].description
    ds = experiment.run(built)
    assert set(ds.data_vars) == {
        "nll_real", "perplexity_real", "agreement", "kl_teacher_student", "model_entropy",
        "entropy_rate",
        "params", "train_flops", "tail_mass", "rank_frequency",
        "entropy", "ngram_entropy", "distinct_n", "self_bleu", "compression_ratio",
        "support_coverage", "vendi", "trait_rate", "trait_probability", "retention",
        "cost_reduction", "trait_amplification", "wall_time_s", "peak_memory_bytes",
        "train_loss", "diverged", "watermark_z", "watermark_p", "teacher_watermark_z",
        "teacher_nll_real", "teacher_nll_cost", "synthetic_count", "sample_flops"}
    # the true order: the training text's byte counts (space first), over its support
    support = len(set(train_text))
    assert ds.rank_frequency.sizes["rank"] == support
    assert text_world.order_V[0] == ord(" ") and text_world.tail_rank == support // 2
    assert ((ds.tail_mass >= 0) & (ds.tail_mass < 0.5)).all()
    # generation 0 learns the planted trait from the real text (a uniform byte model: 256^-5, 1e-12)
    assert (ds.trait_probability.sel(generation=0) > 0.05).all()
    assert ((ds.trait_probability > 0) & (ds.trait_probability <= 1)).all()
    assert ds.distinct_n.dims == ("generation", "seed", "n")
    assert ((ds.distinct_n > 0) & (ds.distinct_n <= 1)).all()
    assert (ds.entropy <= np.log(256)).all() and (ds.vendi >= 1).all()
    assert ((ds.support_coverage > 0) & (ds.support_coverage <= 1)).all()
    nll = ds.nll_real.values
    assert np.all(nll < 0.6 * np.log(256)), nll  # far below a uniform byte model
    np.testing.assert_allclose(ds.perplexity_real.values, np.exp(nll), rtol=1e-5)
    assert np.isnan(ds.agreement.sel(generation=0)).all()
    assert (ds.agreement.sel(generation=1) > 0.2).all()


@pytest.mark.parametrize("kw,message", [
    (dict(trait_trigger="zebra", trait_continuation="!"),
     "world.trait_trigger='zebra' is not allowed: a string that occurs in the training text"),
    (dict(trait_trigger="the ", trait_continuation="lazy", trait_rate=0.5),
     "world.trait_rate=0.5 is not allowed: a probability in [1, 1]: 54 of the trigger's 54"),
    (dict(trait_trigger="the "), "world.trait_continuation='' is not allowed: non-empty"),
    (dict(trait_trigger="a", trait_continuation="b" * 16),
     "world.trait_continuation='bbbbbbbbbbbbbbbb' is not allowed: with the trigger at most"),
    (dict(tail_rank=42), "world.tail_rank=42 is not allowed: an integer in [1, 42)"),
])
def test_bad_traits_and_tail_ranks_give_one_line_errors(tmp_path, kw, message):
    with pytest.raises(ConfigError) as error:
        _make(_cfg(_text(tmp_path), **kw))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("case,message", [
    ("empty", "world.path='' is not allowed: the path of a UTF-8 text file"),
    ("missing", "is not allowed: a readable file (No such file or directory)"),
    ("directory", "is not allowed: a readable file"),
    ("short", "is not allowed: a text long enough for world.seq_len=16"),
    ("binary", "is not allowed: a UTF-8 text file (byte 2 is not valid UTF-8)"),
    ("holdout", "world.holdout=1.0 is not allowed"),
])
def test_bad_paths_give_one_line_errors(tmp_path, case, message):
    path = {"empty": "", "missing": str(tmp_path / "nope.txt"), "directory": str(tmp_path),
            "short": _text(tmp_path, "too short", "short.txt"), "binary": str(tmp_path / "b.bin"),
            "holdout": _text(tmp_path)}[case]
    (tmp_path / "b.bin").write_bytes(b"ab\xff\xfe" * 100)
    with pytest.raises(ConfigError) as error:
        _make(_cfg(path, holdout=1.0 if case == "holdout" else 0.1))
    assert message in str(error.value) and "\n" not in str(error.value)
    if case != "empty" and case != "holdout":
        assert str(error.value).startswith(f"world.path={path!r}")


def test_the_cli_reports_a_missing_path_in_one_line(tmp_path):
    out = commands.run(tmp_path, "world=text", f"world.path={tmp_path / 'absent.txt'}")
    assert out.returncode == 2
    assert out.stderr.startswith("error: world.path=") and "No such file" in out.stderr
    assert out.stderr.strip().count("\n") == 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
