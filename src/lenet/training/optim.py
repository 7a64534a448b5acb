"""Optimizers and learning-rate schedules named by the training recipe.

Schedules step once per batch, so `cosine` and `one-cycle` anneal smoothly
over the whole run (epochs x batches per epoch).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LRScheduler, OneCycleLR

from ..native import sgd as native_sgd
from .config import TrainConfig


class SGD(torch.optim.SGD):
    """torch.optim.SGD whose multi-tensor step runs natively where that gives its floats to
    the bit (lenet.native.sgd: one pass over each tensor instead of one per line of the
    update; 0.2-0.3 ms a step less for LeNet on 2 cores, where the fused kernel's backward
    pass has just pushed the parameters out of the cache). Anything the native step does
    not cover (a closure, maximize, differentiable, tensor learning rates, sparse or GPU
    gradients, mixed layouts) takes PyTorch's step; its state is PyTorch's (checkpoints,
    schedulers and hooks see a torch.optim.SGD)."""

    def step(self, closure: Any = None) -> Any:
        with torch.no_grad():
            if closure is None and self._native_step():
                return None
        # PyTorch's step without its hooks: they ran around this one (a plain SGD made in
        # this process wraps SGD.step with them too)
        step = torch.optim.SGD.step
        if getattr(step, "hooked", False):
            step = step.__wrapped__  # type: ignore[attr-defined]
        return step(self, closure)

    def _native_step(self) -> bool:
        """Take the step natively if every group allows it (all or nothing: a step half
        taken would be taken twice); False, having changed nothing, otherwise. Checked
        every step, in about 1 us a tensor (the whole native step is 30-40 us for LeNet)."""
        if not native_sgd.usable():
            return False
        plans = []
        for group in self.param_groups:
            # (foreach, as lenet asks: the for-loop step leaves the gradients as they were;
            # without momentum PyTorch's step is one operation, as fast as this one)
            momentum = group["momentum"]
            if (not momentum or group["maximize"] or group["differentiable"] or group.get("fused")
                    or group["foreach"] is not True or isinstance(group["lr"], torch.Tensor)):
                return False
            params, grads, bufs, fresh = [], [], [], []
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                # (autograd keeps a gradient's dtype, device and shape its parameter's)
                if (g.layout is not torch.strided or not p.is_cpu or p.dtype != torch.float32
                        or not _dense(p) or not _alike(g, p)):
                    return False
                buf = self.state[p].get("momentum_buffer")
                if buf is not None and (buf.dtype != p.dtype or not buf.is_cpu
                                        or not _alike(buf, p)):
                    return False
                params.append(p)
                grads.append(g)
                bufs.append(buf)
                fresh.append(buf is None)
            plans.append((group, params, grads, bufs, fresh))
        lib = native_sgd.library()
        assert lib is not None  # usable() says it loaded
        for group, params, grads, bufs, fresh in plans:
            for k, new in enumerate(fresh):
                if new:  # PyTorch's first step clones the gradient: the kernel fills it
                    bufs[k] = self.state[params[k]]["momentum_buffer"] = torch.empty_like(
                        grads[k])
            settings = native_sgd.Settings(float(group["lr"]), group["momentum"],
                                           group["dampening"], group["weight_decay"],
                                           group["nesterov"])
            native_sgd.run(lib, params, grads, bufs, fresh, settings)
        return True


def _alike(t: torch.Tensor, like: torch.Tensor) -> bool:
    """Whether `t` has `like`'s floats in the same places (the strides of dimensions of size 1
    address nothing: a (6, 1, 5, 5) weight is both contiguous and channels-last)."""
    return t.stride() == like.stride() or (t.shape == like.shape and all(
        a == b for a, b, n in zip(t.stride(), like.stride(), t.shape, strict=True) if n > 1))


def _dense(t: torch.Tensor) -> bool:
    """Whether `t`'s floats are one block in memory (contiguous, or channels-last)."""
    return t.is_contiguous() or (t.dim() == 4
                                 and t.is_contiguous(memory_format=torch.channels_last))


def build_optimizer(params: Iterable[torch.nn.Parameter],
                    config: TrainConfig) -> torch.optim.Optimizer:
    # foreach: one multi-tensor update for all parameters, where PyTorch's CPU default is a
    # Python loop over them. The same results to the bit (tests/training/test_optim.py),
    # 1.6x faster for LeNet's 16-18 tensors (benchmarks/optimizer_step.py). (`fused` is faster
    # still but uses FMAs: its results differ in the last bits, and the records would move.)
    lr, wd, foreach = config.lr, config.weight_decay, True
    if config.optimizer == "sgd":
        return SGD(params, lr=lr, momentum=config.momentum,
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
