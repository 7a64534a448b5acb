"""The compiled sums of the pixel-statistics OOD detector (lenet.native.pixels): the
statistics bit for bit numpy's, on images of every kind and size."""

from __future__ import annotations

import numpy as np
import pytest

from lenet.native import pixels
from lenet.ood.detectors import pixel_statistics


def batches() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    sparse = np.where(rng.random((30, 28, 28)) < 0.8, 0, noise[:30])  # dark, with edges
    return [noise, sparse.astype(np.uint8), np.zeros((3, 28, 28), np.uint8),
            np.full((2, 28, 28), 255, np.uint8), np.full((2, 28, 28), 13, np.uint8),
            np.full((2, 28, 28), 25, np.uint8), np.full((2, 28, 28), 26, np.uint8),
            rng.integers(0, 256, (3, 300, 200), dtype=np.uint8),  # a resized photo's size
            rng.integers(0, 256, (4, 1, 1), dtype=np.uint8),
            rng.integers(0, 256, (4, 3, 7), dtype=np.uint8),
            rng.integers(0, 256, (0, 28, 28), dtype=np.uint8)]


@pytest.mark.parametrize("images", batches(), ids=lambda a: "x".join(map(str, a.shape)))
def test_the_statistics_are_numpy_s_bit_for_bit(images, monkeypatch):
    assert pixels.library() is not None
    with np.errstate(invalid="ignore", divide="ignore"):
        compiled = pixel_statistics(images)
    monkeypatch.setattr(pixels, "pixel_sums", lambda _: None)
    with np.errstate(invalid="ignore", divide="ignore"):  # a 1-pixel image has no steps
        assert np.array_equal(compiled, pixel_statistics(images), equal_nan=True)


def test_lenet_native_0_turns_it_off(monkeypatch):
    images = np.zeros((2, 28, 28), np.uint8)
    assert pixels.pixel_sums(images).shape == (2, len(pixels.FIELDS))
    assert pixels.pixel_sums(np.zeros((1, 2001, 2000), np.uint8)) is None  # 32-bit sums
    monkeypatch.setenv("LENET_NATIVE", "0")
    assert pixels.pixel_sums(images) is None
