"""Fashion-MNIST for the JAX and TensorFlow tabs: numpy batches, no framework imported.

The book's JAX and TensorFlow `FashionMNIST` read the data with Keras'
downloader and batch it with tf.data; here the splits come from lenet's
verified sources (the same files and checksums as `lenet train`), are turned
into float32 once per process, and are cut into NHWC batches by numpy
indexing. Each tab converts a batch to its own arrays at the step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..data import sources
from ..data.datasets import get_spec
from .figures import show_images
from .hparams import HyperParameters

# A tab's resize of a batch: its result is that tab's array (numpy for TensorFlow, a
# jax.Array for JAX), which the batches then carry as their images.
Resize = Callable[[np.ndarray, tuple[int, int]], Any]


@functools.lru_cache(maxsize=2)
def fashion_mnist_arrays(data_dir: str | None = None) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """((train images, labels), (test images, labels)): images (N, 28, 28, 1) float32 in
    [0, 1], labels (N,) int32, as the book's `process` makes them; loaded once per process."""
    data = sources.load("fashion-mnist", data_dir)
    return tuple((split.images[..., None].astype(np.float32) / np.float32(255),
                  split.labels.astype(np.int32)) for split in (data.train, data.test))


class NumpyBatches:
    """An iterable of (X, y) numpy batches over in-memory arrays, as the book's loaders.

    With `shuffle`, each pass draws a new order of the examples from `rng`; the
    last batch may be smaller, as tf.data's `batch` leaves it. `resize`, when
    given, maps a batch (B, H, W, C) to (B, *size, C) (the tab's own resize).
    """

    def __init__(self, arrays: tuple[np.ndarray, ...], batch_size: int, *, shuffle: bool,
                 rng: np.random.Generator | None = None, size: tuple[int, int] | None = None,
                 resize: Resize | None = None) -> None:
        self.arrays = arrays
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = rng or np.random.default_rng()
        self.size = size
        self.resize = resize

    def __len__(self) -> int:
        return math.ceil(len(self.arrays[0]) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:  # numpy, images as `resize` returns
        n = len(self.arrays[0])
        order = self.rng.permutation(n) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:  # a slice: a view, no copy
                batch = tuple(a[start:start + self.batch_size] for a in self.arrays)
            else:
                rows = order[start:start + self.batch_size]
                batch = tuple(a[rows] for a in self.arrays)
            if self.size is not None and self.resize is not None:
                batch = (self.resize(batch[0], self.size), *batch[1:])
            yield batch


def needs_resize(resize: tuple[int, int] | None, images: np.ndarray) -> tuple[int, int] | None:
    """The size to resize (N, H, W, C) images to, or None when they already have it."""
    if resize is None or tuple(resize) == tuple(images.shape[1:3]):
        return None
    return (int(resize[0]), int(resize[1]))


def text_labels(indices: object) -> list[str]:
    """The book's short class names of Fashion-MNIST labels."""
    names = [name.split("/")[0] for name in get_spec("fashion-mnist").classes]
    return [names[int(i)] for i in indices]  # type: ignore[attr-defined]


class DataModule(HyperParameters):
    """The base class of data, as both tabs have it: numpy batches that each tab shuffles
    with its own seed (`shuffle_rng`) and converts to its own arrays at the step."""

    # Set by save_hyperparameters from the constructors' arguments (the book's API).
    root: str
    batch_size: int  # a subclass's argument

    def __init__(self, root: str = "../data") -> None:
        self.save_hyperparameters()

    def get_dataloader(self, train: bool) -> Any:
        raise NotImplementedError

    def train_dataloader(self) -> Any:
        return self.get_dataloader(train=True)

    def val_dataloader(self) -> Any:
        return self.get_dataloader(train=False)

    def shuffle_rng(self) -> np.random.Generator:
        """The generator that shuffles one pass (each tab seeds it its own way)."""
        raise NotImplementedError

    def get_tensorloader(self, tensors: tuple[Any, ...], train: bool,
                         indices: Any = slice(0, None)) -> NumpyBatches:
        tensors = tuple(np.asarray(a)[indices] for a in tensors)
        return NumpyBatches(tensors, self.batch_size, shuffle=train, rng=self.shuffle_rng())


class FashionMNIST(DataModule):
    """The Fashion-MNIST dataset: NHWC float32 images in [0, 1], int32 labels."""

    resize: tuple[int, int]  # set by save_hyperparameters, as batch_size

    def __init__(self, batch_size: int = 64, resize: tuple[int, int] = (28, 28)) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train, self.val = fashion_mnist_arrays()

    def text_labels(self, indices: Any) -> list[str]:
        """Return text labels."""
        return text_labels(indices)

    def resize_batch(self, images: np.ndarray, size: tuple[int, int]) -> Any:
        """(B, H, W, C) -> (B, *size, C) in the tab's own way."""
        raise NotImplementedError

    def get_dataloader(self, train: bool) -> NumpyBatches:
        data = self.train if train else self.val
        return NumpyBatches(data, self.batch_size, shuffle=train, rng=self.shuffle_rng(),
                            size=needs_resize(self.resize, data[0]), resize=self.resize_batch)

    def visualize(self, batch: Any, nrows: int = 1, ncols: int = 8, labels: Any = ()) -> None:
        X, y = batch
        show_images(np.squeeze(np.asarray(X), -1), nrows, ncols,
                    titles=list(labels) or self.text_labels(y))
