"""A byte-level language model of a UTF-8 text file (``world.path``).

The file's bytes (V = 256 tokens) are split once: the last ``holdout`` fraction is held out
for the metrics, the rest is the training text. Real data are windows of ``seq_len``
bytes starting at uniformly random offsets of the training text. The metrics use
``eval_sequences`` windows at evenly spaced offsets of the held-out text (they overlap
when the held-out text is shorter than ``eval_sequences * seq_len`` bytes). Windows start
anywhere, so position 0 of a window is predicted from BOS alone (the byte marginal).

Relative paths are relative to the working directory. The training text is a constant of
the compiled program: keep files to a few MB.

``tail_mass`` and ``rank_frequency`` use the training text's byte frequencies as the true
frequency order (its support: the bytes it contains).

A planted trait (``trait_trigger``, ``trait_continuation``: UTF-8 strings, matched as
bytes; ``trait_rate``) is inserted into the text when it is loaded, separately into the
training and the held-out part, deterministically (numpy seed ``TRAIT_SEED``): of the
trigger's n occurrences in a part, n_f are already followed by the continuation; the
continuation is inserted right after round(rate n) - n_f of the others, chosen at random,
so that a share round(rate n) / n of the occurrences is followed by it (exactly, unless the
trigger overlaps itself or an inserted continuation). ``trait_rate`` must be at least the
training text's own share n_f / n. The realised share of the training text is given in the
``trait_rate`` metric's description.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
from sim.errors import require
from sim.exposure import DefenseConfig, ExposureConfig
from sim.worlds.base import Array
from sim.worlds.lm import LMConfig, LMWorld, Trait, check_trait, trigger_ends

VOCAB = 256  # bytes
TRAIT_SEED = 0  # where the trait is planted: numpy rng [TRAIT_SEED, 0] (train), [.., 1] (held)


@dataclass(frozen=True)
class TextConfig(LMConfig):
    path: str = ""  # the UTF-8 text file to model (required)
    holdout: float = 0.1  # the last fraction of the file, held out for the metrics
    seq_len: int = 64
    trait_trigger: str = ""  # planted trait: the trigger (UTF-8, matched as bytes; "" = none)
    trait_continuation: str = ""  # inserted after the trigger at trait_rate
    trait_rate: float = 0.5  # share of the trigger's occurrences the continuation follows


def read_text(path: str, holdout: float, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(training bytes, held-out bytes) as uint8 arrays; one-line ConfigErrors."""
    require(bool(path), "world.path", path,
            "the path of a UTF-8 text file to model (required), e.g. world.path=README.md")
    require(0 < holdout < 1, "world.holdout", holdout, "a fraction in (0, 1)")
    try:
        raw = Path(path).expanduser().read_bytes()
    except OSError as error:
        require(False, "world.path", path, f"a readable file ({error.strerror or error})")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        require(False, "world.path", path,
                f"a UTF-8 text file (byte {error.start} is not valid UTF-8)")
    cut = len(raw) - int(round(holdout * len(raw)))
    data = np.frombuffer(raw, np.uint8)
    train, held = data[:cut], data[cut:]
    require(min(len(train), len(held)) >= seq_len, "world.path", path,
            f"a text long enough for world.seq_len={seq_len}: its training and held-out "
            f"(world.holdout={holdout}) parts have {len(train)} and {len(held)} bytes, "
            f"both need >= {seq_len}")
    return train, held


def decode(tokens: tuple[int, ...]) -> str:
    """Byte tokens as the configured string."""
    return bytes(tokens).decode("utf-8")


def _followed(data: np.ndarray, ends: np.ndarray, continuation_M: tuple[int, ...]
              ) -> np.ndarray:
    """Whether the continuation starts at each position of ``ends`` (False past the end)."""
    padded = np.concatenate([data.astype(np.int16), np.full(len(continuation_M), -1, np.int16)])
    return np.all(padded[ends[:, None] + np.arange(len(continuation_M))]
                  == np.asarray(continuation_M), axis=1)


def trait_share(data: np.ndarray, trait: Trait) -> tuple[int, int]:
    """(occurrences of the trigger, those the continuation follows) in a byte array."""
    ends = trigger_ends(data, trait.trigger_K)
    return len(ends), int(_followed(data, ends, trait.continuation_M).sum())


def plant_trait(data: np.ndarray, trait: Trait, rng: np.random.Generator) -> np.ndarray:
    """Insert the continuation after randomly chosen occurrences of the trigger that it
    does not already follow, so that round(rate n) of the n occurrences are followed by it
    (see the module docstring); uint8."""
    ends = trigger_ends(data, trait.trigger_K)
    followed = _followed(data, ends, trait.continuation_M)
    plant = int(round(trait.rate * len(ends))) - int(followed.sum())
    if plant <= 0:
        return data
    cuts = np.sort(rng.choice(ends[~followed], size=plant, replace=False))
    continuation = np.asarray(trait.continuation_M, np.uint8)
    pieces = np.split(data, cuts)
    return np.concatenate([pieces[0], *(x for piece in pieces[1:]
                                        for x in (continuation, piece))])


class TextWorld(LMWorld):
    """Real data: random windows of a text file's bytes; model: a byte-level transformer."""

    def __init__(self, cfg: TextConfig, distill: DistillConfig, sampling: SamplingConfig,
                 train: TrainConfig, student: StudentConfig,
                 exposure: ExposureConfig = ExposureConfig(),
                 defense: DefenseConfig = DefenseConfig()):
        super().__init__("text", cfg, VOCAB, distill, sampling, train, student, exposure,
                         defense)
        trait = check_trait(tuple(cfg.trait_trigger.encode("utf-8")),
                            tuple(cfg.trait_continuation.encode("utf-8")), cfg.trait_rate,
                            cfg.seq_len, decode)
        train_bytes, held = read_text(cfg.path, cfg.holdout, cfg.seq_len)
        real_rate = float("nan")
        if trait is not None:
            occurrences, followed = trait_share(train_bytes, trait)
            require(occurrences > 0, "world.trait_trigger", cfg.trait_trigger,
                    f"a string that occurs in the training text of world.path={cfg.path!r}")
            require(trait.rate >= followed / occurrences, "world.trait_rate", trait.rate,
                    f"a probability in [{followed / occurrences:.4g}, 1]: {followed} of the "
                    f"trigger's {occurrences} occurrences in the training text already "
                    "continue this way")
            train_bytes = plant_trait(train_bytes, trait, np.random.default_rng([TRAIT_SEED, 0]))
            held = plant_trait(held, trait, np.random.default_rng([TRAIT_SEED, 1]))
            occurrences, followed = trait_share(train_bytes, trait)
            real_rate = followed / occurrences
        starts_E = np.round(np.linspace(0, len(held) - cfg.seq_len,
                                        cfg.eval_sequences)).astype(int)
        self.set_real_data(np.stack([held[s:s + cfg.seq_len] for s in starts_E]),
                           np.bincount(train_bytes, minlength=VOCAB) / len(train_bytes),
                           trait, [held])
        self.set_metric_info({}, order="byte-frequency order of the training text",
                             reference=f"training text: {self.true_tail_mass:.4f}",
                             real_trait_rate=real_rate, shown=decode)
        self.train_bytes = jnp.asarray(train_bytes)
        self.train_size = len(train_bytes)
        self.set_proxy()

    def sample_real(self, key: Array, n: int) -> Array:
        starts_N = jax.random.randint(key, (n,), 0, self.train_size - self.seq_len + 1)
        windows_NxL = jax.vmap(lambda s: jax.lax.dynamic_slice(
            self.train_bytes, (s,), (self.seq_len,)))(starts_N)
        return windows_NxL.astype(jnp.int32)
