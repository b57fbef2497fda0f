"""A byte-level language model of a UTF-8 text file (``world.path``).

The file's bytes (V = 256 tokens) are split once: the last ``holdout`` fraction is held out
for the metrics, the rest is the training text. Real data are windows of ``seq_len``
bytes starting at uniformly random offsets of the training text. The metrics use
``eval_sequences`` windows at evenly spaced offsets of the held-out text (they overlap
when the held-out text is shorter than ``eval_sequences * seq_len`` bytes). Windows start
anywhere, so position 0 of a window is predicted from BOS alone (the byte marginal).

Relative paths are relative to the working directory. The training text is a constant of
the compiled program: keep files to a few MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sim.distill import DistillConfig, SamplingConfig, StudentConfig, TrainConfig
from sim.errors import require
from sim.worlds.base import Array
from sim.worlds.lm import LMConfig, LMWorld

VOCAB = 256  # bytes


@dataclass(frozen=True)
class TextConfig(LMConfig):
    path: str = ""  # the UTF-8 text file to model (required)
    holdout: float = 0.1  # the last fraction of the file, held out for the metrics
    seq_len: int = 64


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


class TextWorld(LMWorld):
    """Real data: random windows of a text file's bytes; model: a byte-level transformer."""

    def __init__(self, cfg: TextConfig, distill: DistillConfig, sampling: SamplingConfig,
                 train: TrainConfig, student: StudentConfig):
        super().__init__("text", cfg, VOCAB, distill, sampling, train, student)
        train_bytes, held = read_text(cfg.path, cfg.holdout, cfg.seq_len)
        starts_E = np.round(np.linspace(0, len(held) - cfg.seq_len,
                                        cfg.eval_sequences)).astype(int)
        self.eval_ExL = jnp.asarray(np.stack([held[s:s + cfg.seq_len] for s in starts_E]),
                                    jnp.int32)
        self.train_bytes = jnp.asarray(train_bytes)
        self.support_V = jnp.zeros(VOCAB, bool).at[np.unique(train_bytes)].set(True)
        self.train_size = len(train_bytes)

    def sample_real(self, key: Array, n: int) -> Array:
        starts_N = jax.random.randint(key, (n,), 0, self.train_size - self.seq_len + 1)
        windows_NxL = jax.vmap(lambda s: jax.lax.dynamic_slice(
            self.train_bytes, (s,), (self.seq_len,)))(starts_N)
        return windows_NxL.astype(jnp.int32)
