"""The previous edition's API: load_data_fashion_mnist, train_ch6 and their helpers.

`train_ch6` is the book's function in signature, defaults, printed lines and
plot; its epochs run on lenet's `train_one_epoch` and `evaluate`, over data
held in memory on the training device.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..data.loader import Batches
from ..native.fastpath import prepare_model
from ..training.loop import EpochTotals, evaluate, train_one_epoch
from .core import fashion_mnist_tensors, in_memory_batches, torchvision_root
from .figures import Animator
from .fused import SequentialKernel, Trained


class Timer:
    """Record multiple running times."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start()

    def start(self) -> None:
        self.tik = time.time()

    def stop(self) -> float:
        self.times.append(time.time() - self.tik)
        return self.times[-1]

    def avg(self) -> float:
        return sum(self.times) / len(self.times)

    def sum(self) -> float:
        return sum(self.times)

    def cumsum(self) -> list[float]:
        return np.array(self.times).cumsum().tolist()


class Accumulator:
    """For accumulating sums over `n` variables."""

    def __init__(self, n: int) -> None:
        self.data = [0.0] * n

    def add(self, *args: Any) -> None:
        self.data = [a + float(b) for a, b in zip(self.data, args, strict=False)]

    def reset(self) -> None:
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx: int) -> float:
        return self.data[idx]


def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    """Compute the number of correct predictions."""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(dim=1)
    cmp = y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


def size(x: torch.Tensor, *args: Any, **kwargs: Any) -> int:
    return x.numel(*args, **kwargs)


def load_data_fashion_mnist(batch_size: int, resize: Any = None,
                            root: str = "../data") -> tuple[Batches, Batches]:
    """Fashion-MNIST as in-memory (train, test) iterators of (X, y) batches."""
    train, test = fashion_mnist_tensors(torchvision_root(root))
    if isinstance(resize, int):
        resize = (resize, resize)
    return (in_memory_batches(train, batch_size, shuffle=True, resize=resize),
            in_memory_batches(test, batch_size, shuffle=False, resize=resize))


def evaluate_accuracy_gpu(net: nn.Module, data_iter: Iterable[Any], device: Any = None) -> float:
    """Compute the accuracy for a model on a dataset using a GPU."""
    if device is not None:
        net.to(device)
    return evaluate(net, data_iter).accuracy


class SizedBatches(Protocol):
    """What train_ch6 trains on: batches that can be counted (a DataLoader, Batches)."""

    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...


def train_ch6(net: nn.Module, train_iter: SizedBatches, test_iter: Iterable[Any], num_epochs: int,
              lr: float, device: Any) -> None:
    """Train a model with a GPU (defined in Chapter 6)."""
    def init_weights(m: nn.Module) -> None:
        if type(m) is nn.Linear or type(m) is nn.Conv2d:
            nn.init.xavier_uniform_(m.weight)

    net.apply(init_weights)
    print("training on", device)
    prepare_model(net, torch.device(device))
    fused = SequentialKernel.of(net) if torch.device(device).type == "cpu" else None
    model = Trained(net, fused) if fused is not None else net  # trains net's parameters
    for batches in (train_iter, test_iter):
        if isinstance(batches, Batches):
            batches.to(device)  # once, instead of every batch
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    animator = Animator(xlabel="epoch", xlim=[1, num_epochs],
                        legend=["train loss", "train acc", "test acc"])
    num_batches = len(train_iter)
    # The book plots 5 points an epoch with `num_batches // 5`, which divides by
    # zero when there are fewer than 5 batches.
    every = max(num_batches // 5, 1)
    train_seconds, examples = 0.0, 0
    for epoch in range(num_epochs):
        def point(t: EpochTotals, epoch: int = epoch) -> None:
            animator.add(epoch + t.steps / num_batches, (t.loss, t.accuracy, None))

        totals = train_one_epoch(model, train_iter, optimizer, epoch=epoch,
                                 on_progress=point, progress_every=every)
        if totals.steps % every:
            point(totals)  # the book's last point of an epoch
        train_seconds += totals.seconds
        examples += totals.examples
        test_acc = evaluate_accuracy_gpu(model, test_iter)
        animator.add(epoch + 1, (None, None, test_acc))
    print(f"loss {totals.loss:.3f}, train acc {totals.accuracy:.3f}, test acc {test_acc:.3f}")
    print(f"{examples / train_seconds:.1f} examples/sec on {device!s}")
    animator.finish()
