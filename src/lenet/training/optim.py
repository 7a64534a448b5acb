"""Optimizers and learning-rate schedules named by the training recipe.

Schedules step once per batch, so `cosine` and `one-cycle` anneal smoothly
over the whole run (epochs x batches per epoch).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LRScheduler, OneCycleLR

from ..native import sgd as native_sgd
from .config import TrainConfig


class SGD(torch.optim.SGD):
    """torch.optim.SGD whose multi-tensor step runs natively where that gives its floats to
    the bit (lenet.native.sgd: one pass over each tensor instead of one per line of the
    update; benchmarks/optimizer_step.py, 2 Zen 4 cores: speed-90's step 2.6-3x faster
    alone, 350 -> 230 us inside a training step, where the fused kernel's backward pass has
    just pushed the parameters out of the cache). Anything it does not cover takes
    PyTorch's step: a closure, no momentum (one operation there already), maximize,
    differentiable, tensor learning rates, sparse or GPU tensors, mixed layouts. Its state is
    PyTorch's: checkpoints, schedulers and hooks see a torch.optim.SGD."""

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
        taken would be taken twice); False, having changed nothing, otherwise."""
        if not native_sgd.usable():
            return False
        lib = native_sgd.library()
        assert lib is not None  # usable() says it loaded
        plans = []
        for k, group in enumerate(self.param_groups):
            # (foreach, as lenet asks: the for-loop step leaves the gradients as they were;
            # without momentum PyTorch's step is one operation, as fast as this one)
            if (not group["momentum"] or group["maximize"] or group["differentiable"]
                    or group.get("fused") or group["foreach"] is not True
                    or isinstance(group["lr"], torch.Tensor)):
                return False
            plan = self._plans.get(k)
            if plan is None or not plan.fits(group, self.state):
                plan = _Plan.of(group, self.state)
                if plan is None or not plan.fits(group, self.state):
                    return False
                self._plans[k] = plan
            plans.append((group, plan))
        for group, plan in plans:
            plan.run(lib, group)
        return True

    @property
    def _plans(self) -> dict[int, _Plan]:
        """Each group's plan (by index), made at its first native step."""
        if "_native_plans" not in self.__dict__:
            self.__dict__["_native_plans"] = {}
        return self.__dict__["_native_plans"]


class _Plan:
    """One parameter group as sgd.c reads it, kept from step to step: its tensors' pointers
    and sizes, its momentum buffers. Made in ~3 us a tensor; checked every step in well under
    one (each gradient is new, the rest is checked to be what it was). The checks matter more
    than their count suggests: in a training step the fused kernel has just pushed Python's
    own objects out of the cache, and each Python operation there costs several times what
    it does alone."""

    def __init__(self, group: dict[str, Any], state: Any, params: list[torch.Tensor],
                 bufs: list[torch.Tensor], fresh: list[bool]) -> None:
        n = len(params)
        self.param_list, self.state, self.params, self.bufs = group["params"], state, params, bufs
        # parameters without a gradient at the plan's making: PyTorch's step skips them
        self.idle = [p for p in group["params"] if p.grad is None]
        self.states = [state[p] for p in params]
        self.addresses = [p.data_ptr() for p in params]
        self.channels_last = [not p.is_contiguous() for p in params]
        self.pointers = (ctypes.c_void_p * (3 * n))(
            *self.addresses, *[0] * n, *[b.data_ptr() for b in bufs])
        self.sizes = (ctypes.c_long * n)(*(p.numel() for p in params))
        self.fresh = (ctypes.c_int * n)(*fresh)

    @classmethod
    def of(cls, group: dict[str, Any], state: Any) -> _Plan | None:
        """The plan for `group` where its parameters with a gradient are all float32 on the
        CPU in one dense block laid out alike; None otherwise. Momentum buffers a parameter
        lacks are made (not yet given to the state), to be filled from its gradient, as
        PyTorch's first step clones it."""
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        bufs = [state[p].get("momentum_buffer") for p in params]
        for p, g, buf in zip(params, grads, bufs, strict=True):
            # (autograd keeps a gradient's dtype, device and shape its parameter's)
            if (g is None or g.layout is not torch.strided or not p.is_cpu
                    or p.dtype != torch.float32 or not _dense(p) or not _alike(g, p)
                    or (buf is not None and (buf.dtype != p.dtype or not buf.is_cpu
                                             or not _alike(buf, p)))):
                return None
        made = [torch.empty_like(g) if buf is None else buf
                for g, buf in zip(grads, bufs, strict=True)]
        return cls(group, state, params, made, [buf is None for buf in bufs])

    def fits(self, group: dict[str, Any], state: Any) -> bool:
        """Whether the group is still what the plan was made for (its parameters, the same
        ones with gradients, their storage and buffers, the optimizer's state), and every
        gradient is laid out as its parameter; the gradients' pointers are filled in as it
        goes."""
        params = self.params
        n = len(params)
        if (group["params"] is not self.param_list or state is not self.state
                or len(self.param_list) != n + len(self.idle)
                or any(p.grad is not None for p in self.idle)):
            return False
        pointers, states, bufs, fresh = self.pointers, self.states, self.bufs, self.fresh
        for k, p in enumerate(params):
            g = p.grad
            if (g is None or g.layout is not torch.strided
                    or not (g.is_contiguous(memory_format=torch.channels_last)
                            if self.channels_last[k] else g.is_contiguous())
                    or p.data_ptr() != self.addresses[k]
                    or states[k].get("momentum_buffer") is not (None if fresh[k] else bufs[k])):
                return False
            pointers[n + k] = g.data_ptr()
        return True

    def run(self, lib: ctypes.CDLL, group: dict[str, Any]) -> None:
        """One step at the group's current settings (a schedule moves its learning rate),
        after `fits`."""
        native_sgd.run(lib, self.pointers, len(self.params), self.sizes, self.fresh,
                       native_sgd.Settings(float(group["lr"]), group["momentum"],
                                           group["dampening"], group["weight_decay"],
                                           group["nesterov"]))
        for k, new in enumerate(self.fresh):
            if new:  # filled now: the state's from here on
                self.states[k]["momentum_buffer"] = self.bufs[k]
                self.fresh[k] = 0


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
    # 1.5x faster for LeNet's 16-18 tensors (benchmarks/optimizer_step.py); SGD's, natively
    # (SGD above), 2.6-3x faster again. (`fused=True` rounds differently: its results differ
    # in the last bits, and the records would move.)
    lr, wd, foreach = config.lr, config.weight_decay, True
    if config.optimizer == "sgd":
        # (without momentum PyTorch's step is one multi-tensor operation: nothing to gain)
        kind = SGD if config.momentum else torch.optim.SGD
        return kind(params, lr=lr, momentum=config.momentum, nesterov=config.nesterov,
                    weight_decay=wd, foreach=foreach)
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
