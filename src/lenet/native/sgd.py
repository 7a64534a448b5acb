"""torch.optim.SGD's multi-tensor step in one native pass over each tensor (sgd.c): the
same floats to the bit, checked on this machine before it is used.

    if usable():                       # built, not turned off, and checked here
        run(library(), pointers, n, sizes, fresh, settings)   # one step of n tensors

lenet.training.optim.SGD keeps the arrays `run` reads from step to step; `step` builds them
from tensors (what the check uses).

The check (`reproduces_torch`, once a process): a few steps of PyTorch's foreach SGD and of
sgd.c on the same tensors, with and without momentum, Nesterov, dampening and weight decay,
of sizes that fill vectors and leave tails; any difference in any bit and PyTorch's step
runs instead (an ATen built another way, a CPU it dispatches differently). LENET_NATIVE=0
turns it off, as every kernel.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch

from . import build

ABI_VERSION = 1

_why: dict[str, str | None] = {}  # why `library()` or `usable()` says no


@cache
def library() -> ctypes.CDLL | None:
    lib, _why["not"] = build.checked_library("sgd", ABI_VERSION)
    if lib is not None:
        p = ctypes.c_void_p
        lib.sgd_step.restype = None
        f = ctypes.c_float
        lib.sgd_step.argtypes = [ctypes.c_int, p, p, p, f, f, f, f, ctypes.c_int, ctypes.c_int]
    return lib


@dataclass(frozen=True)
class Settings:
    """One parameter group's SGD settings (torch.optim.SGD's names)."""

    lr: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool


def run(lib: ctypes.CDLL, pointers: ctypes.Array[ctypes.c_void_p], n: int,
        sizes: ctypes.Array[ctypes.c_long], fresh: ctypes.Array[ctypes.c_int],
        settings: Settings) -> None:
    """One step over n float32 CPU tensors (pointers: n params, n grads, n momentum buffers,
    each param laid out as its grad and buffer in one dense block); fresh[k]: the buffer is
    filled from the gradient, as on a parameter's first step."""
    s = settings
    lib.sgd_step(n, pointers, sizes, fresh, s.lr, s.momentum, 1.0 - s.dampening,
                 s.weight_decay, int(s.nesterov),
                 int(s.nesterov and s.weight_decay == 0 and s.momentum != 0))


def step(lib: ctypes.CDLL, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
         bufs: Sequence[torch.Tensor | None], fresh: Sequence[bool], settings: Settings) -> None:
    """`run` on tensors (the check's way: it builds the arrays each time)."""
    n = len(params)
    pointers = (ctypes.c_void_p * (3 * n))(
        *[t.data_ptr() for t in params], *[t.data_ptr() for t in grads],
        *[0 if t is None else t.data_ptr() for t in bufs])
    run(lib, pointers, n, (ctypes.c_long * n)(*(p.numel() for p in params)),
        (ctypes.c_int * n)(*fresh), settings)


@cache
def reproduces_torch() -> bool:
    """Whether sgd.c gives torch.optim.SGD(foreach=True)'s floats to the bit here (checked
    once a process, on random tensors: about a millisecond)."""
    lib = library()
    if lib is None:
        return False
    generator = torch.Generator().manual_seed(0)
    sizes = (1, 7, 16, 33, 150, 2400)
    cases = (Settings(0.1, 0.0, 0.0, 0.0, False), Settings(0.45, 0.9, 0.0, 0.0, True),
             Settings(0.2, 0.9, 0.0, 5e-4, True), Settings(0.05, 0.8, 0.1, 1e-3, False))
    for case in cases:
        ours = [torch.randn(n, generator=generator) for n in sizes]
        theirs = [t.clone().requires_grad_() for t in ours]
        optimizer = torch.optim.SGD(theirs, lr=case.lr, momentum=case.momentum,
                                    dampening=case.dampening, weight_decay=case.weight_decay,
                                    nesterov=case.nesterov, foreach=True)
        bufs: list[torch.Tensor | None] = [torch.empty_like(t) if case.momentum else None
                                           for t in ours]
        for k in range(3):
            grads = [torch.randn(n, generator=generator) for n in sizes]
            for t, g in zip(theirs, grads, strict=True):
                t.grad = g.clone()
            optimizer.step()
            step(lib, ours, grads, bufs, [k == 0] * len(sizes), case)
            expected_grads = [t.grad for t in theirs]
            if not all(_same(a, b) for a, b in zip(ours, theirs, strict=True)) or not all(
                    _same(a, b) for a, b in zip(grads, expected_grads, strict=True)):
                _why["usable"] = "its floats differ from PyTorch's step here"
                return False
            if case.momentum and not all(
                    _same(b, optimizer.state[t]["momentum_buffer"])
                    for b, t in zip(bufs, theirs, strict=True)):
                _why["usable"] = "its momentum differs from PyTorch's step here"
                return False
    return True


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and torch.equal(a.detach(), b.detach())


def usable() -> bool:
    """Whether optimizers may take their step here: built, not turned off, and checked."""
    return build.mode() != "off" and reproduces_torch()


def describe() -> str:
    """Which path takes SGD's step, and why (lenet doctor)."""
    if build.mode() == "off":
        return f"off ({build.MODE_ENV}=0): PyTorch's foreach step"
    if library() is None:
        return f"not built ({_why.get('not')}): PyTorch's foreach step"
    if not reproduces_torch():
        return f"not used ({_why.get('usable')}): PyTorch's foreach step"
    return "compiled (one pass a tensor; PyTorch's floats to the bit, checked here)"
