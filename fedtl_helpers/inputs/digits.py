"""Real images, offline: the UCI handwritten digits that scikit-learn ships inside its wheel.

Chapter: "Pretrained initialisation" (near-domain synthetic vs out-of-domain real transfer).

``sklearn.datasets.load_digits`` returns 1,797 real 8x8 images of the digits 0-9, each pixel
the count (0..16) of inked pixels in a 4x4 block of a 32x32 bitmap scanned from a handwritten
form (UCI "Optical Recognition of Handwritten Digits", Alpaydin and Kaynak 1998; licence
CC BY 4.0). scikit-learn's copy is UCI's *test* set: 1,797 images from 13 writers, whose writer
ids are not published, so our train and test splits share writers (the accuracy measures new
images from known hands, not new hands). No download: the file is in the wheel.

What this module does, and nothing else:

* **resize**: counts 0..16 become intensities ``round(255 * c / 16)`` and the 8x8 image is
  upsampled 4x to 32x32 by bilinear interpolation with half-pixel centres (the same rule as
  ``tf.image.resize(..., "bilinear")`` and PIL), then copied into three equal channels: the
  ``uint8 (N, 32, 32, 3)`` format of ``shapes`` and CIFAR-10, ink bright on a dark ground;
* **split**: a fixed, stratified split (seed ``SPLIT_SEED``): ``TEST_PER_CLASS`` = 50 images of
  each digit for the test set (500), the other 1,297 for training, each split shuffled.

The split never changes with the run's seed: like CIFAR-10, this is fixed data.
"""

from __future__ import annotations

import numpy as np

CLASSES = tuple(str(d) for d in range(10))
SOURCE = ("digits (UCI handwritten digits via scikit-learn load_digits: real 8x8 scans "
          "upsampled to 32x32 RGB, licence CC BY 4.0, offline)")
N_IMAGES = 1_797
TEST_PER_CLASS = 50
N_TEST = TEST_PER_CLASS * len(CLASSES)  # 500
N_TRAIN = N_IMAGES - N_TEST  # 1,297
SPLIT_SEED = 0
FACTOR = 4  # 8x8 -> 32x32

Split = tuple[np.ndarray, np.ndarray]


def _bilinear_matrix(n: int, factor: int) -> np.ndarray:
    """``(n * factor, n)`` interpolation weights: half-pixel centres, edges clamped."""
    out = np.zeros((n * factor, n), np.float64)
    src = (np.arange(n * factor) + 0.5) / factor - 0.5  # output centre in input coordinates
    lo = np.floor(src).astype(int)
    w = src - lo
    for i, (a, t) in enumerate(zip(lo, w, strict=True)):
        out[i, min(max(a, 0), n - 1)] += 1 - t
        out[i, min(max(a + 1, 0), n - 1)] += t
    return out


def upsample(counts: np.ndarray, factor: int = FACTOR) -> np.ndarray:
    """``(N, 8, 8)`` ink counts 0..16 -> ``uint8 (N, 8 * factor, 8 * factor, 3)`` images."""
    m = _bilinear_matrix(counts.shape[1], factor)
    big = np.einsum("ij,njk,lk->nil", m, counts.astype(np.float64) * (255 / 16), m)
    gray = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def split_indices(labels: np.ndarray, per_class: int = TEST_PER_CLASS,
                  seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split: ``per_class`` test indices of each label, the rest train; shuffled."""
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                           for c in np.unique(labels)])
    train = np.setdiff1d(np.arange(len(labels)), test)
    return rng.permutation(train), rng.permutation(test)


def load_digits() -> tuple[Split, Split]:
    """The digits as ``(x_train, y_train), (x_test, y_test)``: 1,297 / 500 images.

    Images ``uint8 (N, 32, 32, 3)``, labels ``int64 (N,)`` in 0..9 (the digit).
    """
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as e:  # pragma: no cover - scikit-learn is pinned in requirements.txt
        raise ImportError("dataset='digits' reads the images scikit-learn ships: "
                          "pip install 'fedtl[digits]' or scikit-learn (pinned in requirements.txt)") from e
    bunch = _load()
    counts, labels = np.asarray(bunch.images), np.asarray(bunch.target, dtype=np.int64)
    if counts.shape != (N_IMAGES, 8, 8) or counts.min() < 0 or counts.max() > 16:
        raise ValueError(f"scikit-learn's digits are not the expected 1,797 8x8 counts in 0..16 "
                         f"(got {counts.shape}, {counts.min()}..{counts.max()})")
    images = upsample(counts)
    train, test = split_indices(labels)
    return (images[train], labels[train]), (images[test], labels[test])
