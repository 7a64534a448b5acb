"""One epoch of training and one pass of evaluation; both return their metrics.

Running sums stay on the device, so the training step never waits for the
host; they are read (one synchronisation) only at progress updates and at the
end of the epoch. Nothing here prints, plots or writes files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Required, TypedDict, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ..data.loader import Batches, tta_mean
from ..errors import TrainingError
from .distributed import ALONE, World


class HistoryRow(TypedDict, total=False):
    """One epoch's metrics: a row of metrics.csv and of a checkpoint's history. The
    evaluation's pair is test_* (the official test split) or val_* (--val-split)."""

    epoch: Required[int]
    train_loss: Required[float]
    train_acc: Required[float]
    test_loss: float
    test_acc: float
    val_loss: float
    val_acc: float
    lr: Required[float]
    train_examples: Required[int]
    examples_per_sec: Required[float]
    seconds: Required[float]  # training alone
    wall_seconds: Required[float]  # training and evaluation
    elapsed_seconds: Required[float]  # since this process began the run (or resumed it)


def row_value(row: HistoryRow, key: str) -> float:
    """A row's value by a name known only at run time (the metric a search optimises:
    val_acc, val_loss, ...)."""
    return float(cast(Mapping[str, float], row)[key])


def rows_with(history: Iterable[HistoryRow], key: str) -> list[HistoryRow]:
    """The rows that have `key`: an evaluation's figures (test_acc, val_loss, ...) are only
    in the epochs that were evaluated (--eval-every)."""
    return [row for row in history if key in row]


class NonFiniteLossError(TrainingError):
    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"the training loss is no longer finite (epoch {epoch}, by step {step})")
        self.epoch, self.step = epoch, step


@dataclass
class EpochTotals:
    """Running sums over the batches of an epoch seen so far (resumable mid-epoch)."""

    loss_sum: torch.Tensor  # sum of per-example losses, on the device
    correct: torch.Tensor  # number of correct predictions, on the device
    examples: int = 0
    steps: int = 0
    seconds: float = 0.0

    @classmethod
    def zeros(cls, device: torch.device) -> EpochTotals:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long))

    @torch.no_grad()
    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * len(y)
        self.correct += (logits.argmax(dim=1) == y).sum()
        self.examples += len(y)
        self.steps += 1

    def to_state(self) -> dict[str, Any]:
        """For a checkpoint (mid-epoch progress; the sums moved to the CPU)."""
        return {"loss_sum": self.loss_sum.cpu(), "correct": self.correct.cpu(),
                "examples": self.examples, "steps": self.steps, "seconds": self.seconds}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device,
                   sums: bool = True) -> EpochTotals:
        """`to_state`'s totals on `device`; `sums=False` keeps only the steps and seconds
        (ranks other than 0 of several: rank 0 carries the sums so far)."""
        if not sums:
            zeros = cls.zeros(device)
            return cls(zeros.loss_sum, zeros.correct, 0, state["steps"], state["seconds"])
        return cls(state["loss_sum"].to(device), state["correct"].to(device),
                   state["examples"], state["steps"], state["seconds"])

    def across(self, world: World, stop: bool = False) -> tuple[EpochTotals, bool]:
        """(these sums added up over every rank, whether any rank asked to stop): one
        all-reduce. Steps and seconds stay this rank's (the same count everywhere)."""
        if not world.distributed:
            return self, stop
        packed = torch.stack([self.loss_sum.double(), self.correct.double(),
                              self.loss_sum.new_tensor(self.examples, dtype=torch.float64),
                              self.loss_sum.new_tensor(float(stop), dtype=torch.float64)])
        sums = world.sum(packed).tolist()
        return EpochTotals(self.loss_sum.new_tensor(sums[0]),
                           self.correct.new_tensor(round(sums[1])), round(sums[2]),
                           self.steps, self.seconds), sums[3] > 0

    @property
    def loss(self) -> float:
        return self.loss_sum.item() / max(self.examples, 1)

    @property
    def accuracy(self) -> float:
        return self.correct.item() / max(self.examples, 1)

    @property
    def examples_per_sec(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    examples: int


def epoch_batches(batches: Batches | Iterable[Any], epoch: int, start: int = 0
                  ) -> Iterator[Any]:
    """The batches of `epoch`; any iterable of (X, y) works, lenet's Batches also resume."""
    if isinstance(batches, Batches):
        return batches.epoch(epoch, start)
    if start:
        raise ValueError("only lenet.data.loader.Batches can resume in the middle of an epoch")
    return iter(batches)


def train_one_epoch(
    model: nn.Module,
    batches: Batches | Iterable[Any],
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | None = None,
    *,
    epoch: int = 0,
    clip_grad: float | None = None,
    totals: EpochTotals | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[EpochTotals], None] | None = None,
    progress_every: int = 25,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    label_smoothing: float = 0.0,
    world: World = ALONE,
    on_step: Callable[[int], None] | None = None,
) -> EpochTotals:
    """Train for one epoch (or its remainder, when `totals` come from an interrupted one).

    Stops early, after a whole step, when `should_stop()` is true; the caller
    tells a finished epoch by `totals.steps == len(batches)`. Raises
    NonFiniteLossError when the loss becomes NaN or infinite. `on_step(steps)` is called
    after each step with the steps done in this epoch. `autocast_dtype`
    (e.g. torch.bfloat16) runs the forward pass under autocast; float16 also
    scales the loss so that small gradients survive (pass the run's `scaler` to
    keep its scale across epochs; a fresh one is made otherwise). `label_smoothing` e
    trains towards 1-e on the true class and e/classes on each; the loss reported is
    that smoothed loss.

    In a `world` of several processes (lenet.training.distributed), `model` is DDP-wrapped and
    `batches` sharded: the totals returned are summed over the ranks, and the stop and
    finite checks happen every `progress_every` steps, on reduced values, on all ranks.
    """
    device = next(model.parameters()).device
    if autocast_dtype == torch.float16 and scaler is None:
        scaler = torch.amp.GradScaler(device.type)
    autocast = torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                              enabled=autocast_dtype is not None)
    totals = totals or EpochTotals.zeros(device)
    model.train()
    asked = False  # (several processes) a stop asked here, acted on at the next check
    start = time.perf_counter()
    for x, y in epoch_batches(batches, epoch, totals.steps):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # no-op on Batches
        with autocast:
            logits = model(x)  # (B, classes)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if world.distributed:
            # DDP averages the ranks' gradients. A rank's mean loss over its n of the global
            # batch's G examples, weighted n*ranks/G (1.0 when G divides), makes that
            # average the gradient of the global batch's mean loss, as one process has it.
            assert isinstance(batches, Batches), "distributed training shards lenet's Batches"
            objective = loss * (len(y) * world.size / batches.global_size(totals.steps))
        else:
            objective = loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            objective.backward()
            if clip_grad is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
        else:  # float16: scaled loss; a step whose gradients overflowed is skipped
            scaler.scale(objective).backward()
            if clip_grad is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
        if scheduler is not None:
            scheduler.step()
        totals.add(loss, logits, y)
        if on_step is not None:
            on_step(totals.steps)
        if not world.distributed:
            if totals.steps % progress_every == 0:
                _check_finite(totals, epoch)  # reads the loss: one host synchronisation
                if on_progress is not None:
                    on_progress(totals)
            if should_stop():
                break
            continue
        asked = should_stop() or asked
        if totals.steps % progress_every == 0:
            seen, stop = totals.across(world, asked)
            _check_finite(seen, epoch)
            if on_progress is not None:
                on_progress(seen)
            if stop:
                break
    totals, _ = totals.across(world)
    _check_finite(totals, epoch)
    totals.seconds += time.perf_counter() - start  # after the sync above, so it is honest
    return totals


def _check_finite(totals: EpochTotals, epoch: int) -> None:
    if not math.isfinite(totals.loss_sum.item()):
        raise NonFiniteLossError(epoch, totals.steps)


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Batches | Iterable[Any], world: World = ALONE,
             tta: str | None = None) -> EvalResult:
    """Mean cross-entropy and accuracy of `model` over all of `batches` (each rank's shard
    of them, summed over the `world`); `tta` as `lenet.data.loader.tta_mean` takes it."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in epoch_batches(batches, 0):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = tta_mean(model, x, tta)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
        n += len(y)
    model.train(was_training)
    if world.distributed:
        totals, _ = EpochTotals(loss_sum, correct, n).across(world)
        loss_sum, correct, n = totals.loss_sum, totals.correct, totals.examples
    return EvalResult(loss_sum.item() / max(n, 1), correct.item() / max(n, 1), n)
