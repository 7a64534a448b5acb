"""Optimizers and learning-rate schedules named by the training recipe.

Schedules step once per batch, so `cosine` and `one-cycle` anneal smoothly
over the whole run (epochs x batches per epoch).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LRScheduler, OneCycleLR

from .config import TrainConfig


def build_optimizer(params: Iterable[torch.nn.Parameter],
                    config: TrainConfig) -> torch.optim.Optimizer:
    # foreach: one multi-tensor update for all parameters, where PyTorch's CPU default is a
    # Python loop over them. The same results to the bit (tests/training/test_optim.py),
    # 1.6x faster for LeNet's 16-18 tensors (benchmarks/optimizer_step.py). (`fused` is faster
    # still but uses FMAs: its results differ in the last bits, and the records would move.)
    lr, wd, foreach = config.lr, config.weight_decay, True
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=wd, foreach=foreach)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, foreach=foreach)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, foreach=foreach)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum, weight_decay=wd,
                                   foreach=foreach)
    raise AssertionError(f"unvalidated optimizer {config.optimizer!r}")  # TrainConfig checks


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    steps_per_epoch: int) -> LRScheduler:
    total_steps = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total_steps)
    if config.schedule == "one-cycle":
        # Cycle Adam's beta1 as usual, but never add momentum to SGD/RMSprop behind
        # the user's back: their momentum stays what --momentum says.
        return OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps,
                          cycle_momentum=config.optimizer in ("adam", "adamw"))
    return ConstantLR(optimizer, factor=1.0, total_iters=0)
