"""Minibatches from a split held in memory as one tensor on the training device.

Fashion-MNIST is 47 MB of pixels, so the whole split lives on the device as
float32 in [0, 1] (the book's ToTensor scaling) and a batch is one
`index_select` with a seeded permutation: no per-sample Python, no workers.
The permutation for epoch e depends only on (seed, e), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .datasets import evaluation_split
from .sources import Dataset, Split

SHIFT = 2  # pixels: the "shift" augmentation moves images by up to this much
# "erase" (random erasing, Zhong et al. 2017): with this probability an image loses a
# rectangle of 2-33% of its area, aspect ratio 0.3-3.3, to the background (0)
ERASE_PROBABILITY, ERASE_AREA, ERASE_ASPECT = 0.5, (0.02, 0.33), (0.3, 3.3)


def augment_batch(x: torch.Tensor, flips: torch.Tensor, shifts: torch.Tensor,
                  boxes: torch.Tensor | None = None) -> torch.Tensor:
    """Flip some images left-right, translate each by (dy, dx), filling with zeros, and set
    each image's box (top, bottom, left, right; empty: none) to zero."""
    x = torch.where(flips[:, None, None, None], x.flip(-1), x)
    b, c, h, w = x.shape
    if bool(shifts.any()):
        padded = F.pad(x, (SHIFT, SHIFT, SHIFT, SHIFT))  # (B, C, H+2S, W+2S)
        rows = torch.arange(h, device=x.device) + SHIFT + shifts[:, :1]  # (B, H)
        cols = torch.arange(w, device=x.device) + SHIFT + shifts[:, 1:]  # (B, W)
        x = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * SHIFT))
        x = x.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    if boxes is not None and bool((boxes[:, 1] > boxes[:, 0]).any()):
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        inside_rows = (rows >= boxes[:, :1]) & (rows < boxes[:, 1:2])  # (B, H)
        inside_cols = (cols >= boxes[:, 2:3]) & (cols < boxes[:, 3:])  # (B, W)
        x = x.masked_fill((inside_rows[:, :, None] & inside_cols[:, None, :])[:, None], 0.0)
    return x


# Test-time augmentations: the views of each image whose logits are averaged, with weights.
# "flip+shift" (as airbench's): the image and its mirror, half the weight; the pair moved one
# pixel up-left and one pixel down-right (filled with the background, 0), a quarter each.
# (lenet.training.config.TEST_TIME_AUGMENTATIONS names them, torch-free.)


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Images (..., H, W) moved `dy` rows down and `dx` columns right, filled with zeros."""
    h, w = x.shape[-2:]
    m = max(abs(dy), abs(dx))
    padded = F.pad(x, (m, m, m, m))
    return padded[..., m - dy:m - dy + h, m - dx:m - dx + w].contiguous()


def tta_views(x: torch.Tensor, tta: str | None) -> list[tuple[float, torch.Tensor]]:
    """The (weight, images) pairs whose weighted logits a test-time augmentation sums, for
    images (..., H, W); Fashion-MNIST's classes are left-right symmetric, and the training
    shifts (augment "shift") make one-pixel moves an image the model knows."""
    if tta is None:
        return [(1.0, x)]
    if tta == "flip":
        return [(0.5, x), (0.5, x.flip(-1))]
    if tta == "flip+shift":
        views = [(0.25, x), (0.25, x.flip(-1))]
        for d in (-1, 1):
            moved = translate(x, d, d)
            views += [(0.125, moved), (0.125, moved.flip(-1))]
        return views
    raise ValueError(f"unknown test-time augmentation {tta!r}")


def tta_mean(logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             tta: str | None) -> torch.Tensor:
    """`logits_of` (a model, a predictor's logits) averaged over the views of `tta`."""
    if tta is None:
        return logits_of(x)
    logits = torch.zeros(())
    for weight, view in tta_views(x, tta):
        logits = logits + weight * logits_of(view)
    return logits


def erase_boxes(n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Random erasing's rectangles for n images of `size` (H, W): (n, 4) int64 rows of
    top, bottom, left, right; an image not erased gets an empty box."""
    h, w = size
    erased = torch.rand(n, generator=generator) < ERASE_PROBABILITY
    area = torch.empty(n).uniform_(*ERASE_AREA, generator=generator) * (h * w)
    log_low, log_high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.empty(n).uniform_(log_low, log_high, generator=generator).exp()
    height = (area * aspect).sqrt().round().long().clamp(1, h)
    width = (area / aspect).sqrt().round().long().clamp(1, w)
    top = (torch.rand(n, generator=generator) * (h - height + 1)).long()
    left = (torch.rand(n, generator=generator) * (w - width + 1)).long()
    boxes = torch.stack([top, top + height, left, left + width], dim=1)
    return boxes * erased[:, None]  # not erased: (0, 0, 0, 0)


def to_tensors(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 (N, 1, H, W) in [0, 1] and labels as int64 (N,), on `device`."""
    images = torch.from_numpy(split.images).to(device).unsqueeze(1).float().div_(255)
    labels = torch.from_numpy(split.labels.astype(np.int64)).to(device)
    return images, labels


class Batches:
    """Iterates (X, y) minibatches: X (B, 1, H, W) float32, y (B,) int64."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int,
                 shuffle: bool, seed: int = 0, resize: tuple[int, int] | None = None,
                 augment: str | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.resize = batch_size, shuffle, seed, resize
        self.augment = augment
        self.rank, self.world = 0, 1  # shard(): this process's share of each batch
        self._epochs_started = 0  # plain `for` loops draw a fresh order each time

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    def shard(self, rank: int, world: int) -> Batches:
        """From now on yield only share `rank` of `world` of every batch (several processes
        training one model, lenet.training.distributed): the same order and augmentation draws on
        every rank, each global batch cut into `world` consecutive shares that differ in
        size by at most one. Length and `num_examples` stay the global ones."""
        self.rank, self.world = rank, world
        return self

    def global_size(self, step: int) -> int:
        """Examples in global batch `step` of an epoch (all shares together)."""
        return min(self.batch_size, len(self.labels) - step * self.batch_size)

    def order(self, epoch: int) -> torch.Tensor | None:
        """The example order for `epoch` (None: in storage order)."""
        if not self.shuffle:
            return None
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.labels), generator=generator).to(self.labels.device)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch`, skipping the first `start` (to resume mid-epoch)."""
        order = self.order(epoch)
        draws = self.augment_draws(epoch) if self.augment else None
        n = len(self.labels)
        for i in range(start * self.batch_size, n, self.batch_size):
            length = min(self.batch_size, n - i)
            lo = i + self.rank * length // self.world  # this rank's share of the batch
            hi = i + (self.rank + 1) * length // self.world
            if order is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                ids = order[lo:hi]
                x, y = self.images.index_select(0, ids), self.labels.index_select(0, ids)
            if draws is not None:
                x = augment_batch(x, *(d[lo:hi] for d in draws))
            if self.resize is not None:
                x = F.interpolate(x, size=self.resize, mode="bilinear", antialias=True)
            yield x, y

    def augment_draws(self, epoch: int) -> tuple[torch.Tensor, ...]:
        """The whole epoch's random flips (N,), shifts (N, 2) and, with "erase", boxes (N, 4),
        drawn from (seed, epoch) so that a resumed epoch sees the same ones."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 500_000)
        assert self.augment is not None, "drawn only for a loader that augments"
        parts = self.augment.split("+")
        n = len(self.labels)
        # flips and shifts are drawn whatever the parts, so that "flip+shift" keeps the
        # draws it had before "erase" existed; the boxes come after them
        flips = torch.rand(n, generator=generator) < 0.5
        shifts = torch.randint(-SHIFT, SHIFT + 1, (n, 2), generator=generator)
        if "flip" not in parts:
            flips.zero_()
        if "shift" not in parts:
            shifts.zero_()
        device = self.labels.device
        draws = [flips.to(device), shifts.to(device)]
        if "erase" in parts:
            h, w = self.images.shape[-2:]  # augmentation comes before any resize
            draws.append(erase_boxes(n, (h, w), generator).to(device))
        return tuple(draws)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Like a DataLoader: each new iteration is the next epoch's (seeded) order."""
        epoch = self._epochs_started
        self._epochs_started += 1
        return self.epoch(epoch)

    def to(self, device: torch.device | str) -> Batches:
        """Move the whole split to `device` (once, not per batch)."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self


def holdout(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off a seeded random `fraction` of `split` for validation."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--val-split must be between 0 and 1, got {fraction}")
    n_val = round(len(split) * fraction)
    if n_val == 0 or n_val == len(split):
        raise ConfigError(f"--val-split {fraction} leaves an empty split of {len(split)} examples")
    order = np.random.default_rng(seed).permutation(len(split))
    val, train = order[:n_val], order[n_val:]
    return (Split(split.images[train], split.labels[train]),
            Split(split.images[val], split.labels[val]))


def calibration_holdout(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of the `size` training images a run keeps out of training, to calibrate
    its out-of-distribution thresholds on (lenet.ood.calibration). A random stream of its
    own: the choice does not depend on --val-split."""
    if not 0 <= size < n:
        raise ConfigError(f"cannot keep {size} of {n} training images out for OOD calibration")
    if size == 0:
        return np.zeros(0, np.int64)
    return np.sort(np.random.default_rng((seed, 16)).permutation(n)[:size])


def without(split: Split, indices: np.ndarray) -> Split:
    """`split` less the examples at `indices`, order kept."""
    keep = np.ones(len(split), bool)
    keep[indices] = False
    return Split(split.images[keep], split.labels[keep])


@dataclass
class Loaders:
    train: Batches
    eval: Batches
    eval_name: str  # datasets.evaluation_split: "test" (as the book) or "val"


def make_loaders(dataset: Dataset, device: torch.device, *, batch_size: int, seed: int = 0,
                 val_split: float | None = None, resize: tuple[int, int] | None = None,
                 augment: str | None = None, eval_batch_size: int = 1024,
                 ood_holdout: int = 0) -> Loaders:
    """Training batches (shuffled per epoch) and evaluation batches (in order); the
    `ood_holdout` images of `calibration_holdout` are in neither."""
    train, evaluation = dataset.train, dataset.test
    if ood_holdout:  # 0 (the book's recipe): the training stream stays exactly the book's
        train = without(train, calibration_holdout(len(train), ood_holdout, seed))
    if val_split:
        train, evaluation = holdout(train, val_split, seed)
    return Loaders(
        Batches(*to_tensors(train, device), batch_size=batch_size, shuffle=True, seed=seed,
                resize=resize, augment=augment),
        Batches(*to_tensors(evaluation, device), batch_size=eval_batch_size, shuffle=False,
                resize=resize),
        evaluation_split(val_split),
    )
