"""scikit-learn's 8x8 digits (UCI optdigits): the minute-long laptop dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowvae.data.base import ImageData, check_split, make_image_data
from flowvae.data.registry import DataSource, register

__all__ = ["load_digits"]

_DIGITS_SEED = 20240607
_DIGITS_TEST_PER_CLASS = 30  # 10 classes x 30 = 300 test images, 1497 train


def load_digits(split: str = "train") -> ImageData:
    """scikit-learn's 8x8 digits (UCI optdigits) as ``uint8 [N, 1, 8, 8]``.

    The 1,797 images have 17 intensity levels ``0..16``; they are mapped to ``0..255`` by
    ``round(v * 255 / 16)`` (so 0 -> 0, 8 -> 128, 16 -> 255) so every loader shares one pixel range.

    The split is fixed and stratified: for each digit class, a ``numpy`` PCG64 generator seeded
    with ``20240607`` permutes that class's indices and the first 30 go to ``test``; the remaining
    1,497 images are ``train``. Within a split images keep scikit-learn's original order.

    Args:
        split: ``"train"`` (1,497 images) or ``"test"`` (300 images, 30 per class).

    Returns:
        ImageData with labels ``int64`` in ``0..9`` and classes ``"0".."9"``.

    Raises:
        DataError: for an unknown split.
    """
    check_split(split)
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    levels = np.asarray(bunch.images)  # float64 [1797, 8, 8], integer values 0..16
    targets = np.asarray(bunch.target, dtype=np.int64)
    # floor(v + 0.5) rather than np.round: half-up is the documented rule, not banker's rounding.
    pixels = np.floor(levels * (255.0 / 16.0) + 0.5).astype(np.uint8)

    rng = np.random.Generator(np.random.PCG64(_DIGITS_SEED))
    is_test = np.zeros(len(targets), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(targets == c)
        is_test[rng.permutation(members)[:_DIGITS_TEST_PER_CLASS]] = True
    keep = is_test if split == "test" else ~is_test
    return make_image_data(pixels[keep][:, None], targets[keep], f"digits/{split}", [str(i) for i in range(10)],
                           verified="digits")  # shipped inside scikit-learn: always the same images


def _load(root: str | Path | None, split: str) -> ImageData:
    return load_digits(split)  # shipped inside scikit-learn: there is no root


register(DataSource(
    name="digits",
    load=_load,
    options=frozenset(),
    description="scikit-learn's 8x8 digits (UCI optdigits), 1,497 train / 300 test, 10 classes",
))
