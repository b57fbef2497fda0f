"""The digits world's images: the split, class skew, a protected group, pixel noise.

All of it is numpy, done once when the world is built, except the noise that training
images get afresh on every draw (``pixel_noise``; see ``DigitsWorld._pixels``).

* **Split.** The 1797 8x8 images of ``sklearn.datasets.load_digits`` (bundled, no
  download), pixels scaled to [0, 1], split once into stratified train and test parts by
  ``split_seed``.
* **Class skew.** ``classes`` keeps some digits; ``prior`` subsamples them to given shares
  (the same shares in both parts).
* **Protected group.** Members carry a marker, a bright 2x2 patch in the top-left corner
  (pixels that are blank in almost every digit). In the test part each image is a member
  with probability ``group_share``, independently of its label. In the training part the
  images of ``spurious_class`` are members with probability ``spurious_share`` and the
  others with probability ``group_share``: where the two differ the marker is a spurious
  feature, correlated with one class in the teacher's data but not in the world.
* **Pixel noise.** With ``pixel_noise`` > 0 every test image appears ``TEST_DRAWS`` times,
  each with its own fixed Gaussian noise of that std (the training images get fresh noise
  on every draw instead).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

FEATURES = 64  # 8 x 8 pixels
CLASSES = 10
TOTAL = 1797  # images in load_digits
MARKER = np.array([0, 1, 8, 9])  # the top-left 2x2 pixels
TEST_DRAWS = 8  # noisy copies of each test image when pixel_noise > 0


class Images(NamedTuple):
    x_train: np.ndarray  # float32 [n_train, 64], marker included
    y_train: np.ndarray  # int32 [n_train]
    x_test: np.ndarray  # float32 [n_test, 64], marker and noise included
    y_test: np.ndarray  # int32 [n_test]
    group_test: np.ndarray  # bool [n_test]: members of the protected group


def load_split(test_fraction: float, split_seed: int) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)``: pixels in [0, 1], a stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=split_seed, stratify=y)
    return x_train, y_train, x_test, y_test


def skew(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...], prior: tuple[float, ...],
         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the images of ``classes`` and subsample them to the class shares ``prior``:
    as many images as the scarcest class allows, the same shares in every split."""
    keep = np.isin(y, classes)
    x, y = x[keep], y[keep]
    if not prior:
        return x, y
    shares = np.asarray(prior, np.float64) / sum(prior)
    available = np.array([(y == c).sum() for c in classes])
    total = int(np.floor(np.min(available / shares)))
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(y == c), int(round(s * total)),
                                      replace=False) for c, s in zip(classes, shares)])
    rows = np.sort(rows)
    return x[rows], y[rows]


def mark(x: np.ndarray, member: np.ndarray) -> np.ndarray:
    """The images with the marker patch set to 1 on the members."""
    x = x.copy()
    x[np.ix_(member, MARKER)] = 1.0
    return x


def membership(rng: np.random.Generator, y: np.ndarray, share: float,
               spurious_class: int = -1, spurious_share: float = 0.0) -> np.ndarray:
    """Bernoulli group membership: ``spurious_share`` for ``spurious_class``, ``share``
    for every other image."""
    p = np.where(y == spurious_class, spurious_share, share)
    return rng.random(len(y)) < p


def make_images(test_fraction: float, split_seed: int, classes: tuple[int, ...],
                prior: tuple[float, ...], group_share: float, spurious_class: int,
                spurious_share: float, pixel_noise: float) -> Images:
    """Every fixed image of the world (see the module docstring)."""
    x_train, y_train, x_test, y_test = load_split(test_fraction, split_seed)
    x_train, y_train = skew(x_train, y_train, classes, prior, split_seed)
    x_test, y_test = skew(x_test, y_test, classes, prior, split_seed + 1)
    rng = np.random.default_rng([split_seed, 2])
    x_train = mark(x_train, membership(rng, y_train, group_share, spurious_class,
                                       spurious_share))
    group_test = membership(rng, y_test, group_share)
    x_test = mark(x_test, group_test)
    if pixel_noise > 0:
        x_test, y_test, group_test = (np.repeat(a, TEST_DRAWS, axis=0)
                                      for a in (x_test, y_test, group_test))
        x_test = x_test + pixel_noise * rng.standard_normal(x_test.shape)
    return Images(x_train.astype(np.float32), y_train.astype(np.int32),
                  x_test.astype(np.float32), y_test.astype(np.int32), group_test)
