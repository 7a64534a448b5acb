"""A faithful copy of the book's PyTorch data pipeline and training loop, for speed comparisons.

`d2l.FashionMNIST` wraps torchvision's dataset: every example is turned into a
PIL image, resized (a no-op copy at 28x28) and converted by `ToTensor`, one
example at a time, in a `DataLoader` with 4 worker processes. `d2l.Trainer`
then runs the model's `training_step` per batch, and the progress board pulls
every loss to the CPU as a NumPy value. torchvision is not importable beside
our torch, so the per-sample transform is written out here exactly as
torchvision does it (PIL -> uint8 array -> float tensor / 255, shape (1, H, W)).
The board's matplotlib drawing is left out, which favours the book.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

BOOK_NUM_WORKERS = 4  # d2l.DataModule(num_workers=4)


class BookFashionMNIST(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """torchvision.datasets.FashionMNIST with transforms.Compose([Resize, ToTensor])."""

    def __init__(self, images: np.ndarray, labels: np.ndarray,
                 resize: tuple[int, int] = (28, 28)) -> None:
        self.images = torch.from_numpy(images.copy())  # torchvision keeps uint8 tensors
        self.targets = torch.from_numpy(labels.astype(np.int64))
        self.resize = resize

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[i].numpy(), mode="L")
        img = img.resize(self.resize[::-1], Image.Resampling.BILINEAR)  # transforms.Resize
        x = torch.from_numpy(np.array(img, np.uint8, copy=True))  # transforms.ToTensor
        x = x.view(img.size[1], img.size[0], 1).permute(2, 0, 1).contiguous().float().div(255)
        return x, int(self.targets[i])


def book_dataloader(images: np.ndarray, labels: np.ndarray, batch_size: int, train: bool
                    ) -> torch.utils.data.DataLoader[tuple[torch.Tensor, int]]:
    return torch.utils.data.DataLoader(BookFashionMNIST(images, labels), batch_size,
                                       shuffle=train, num_workers=BOOK_NUM_WORKERS)


def book_fit_epoch(model: nn.Module, loader: Iterable[Any],
                   optim: torch.optim.Optimizer) -> tuple[int, float]:
    """`d2l.Trainer.fit_epoch`'s training half; returns (examples, seconds)."""
    model.train()
    examples, start = 0, time.perf_counter()
    for X, Y in loader:  # prepare_batch is the identity on CPU
        Y_hat = model(X)
        loss = F.cross_entropy(Y_hat.reshape(-1, Y_hat.shape[-1]), Y.reshape(-1))
        loss.to("cpu").detach().numpy()  # Module.plot -> ProgressBoard.draw
        optim.zero_grad()
        with torch.no_grad():
            loss.backward()
            optim.step()
        examples += len(Y)
    return examples, time.perf_counter() - start
