"""Channels-last where it measures faster: the layout guard for models the kernel does not fuse.

PyTorch's CPU convolutions (oneDNN) run some shapes much faster on NHWC data and others
slower: LeNet-5's tiny maps lose with batch norm or max-pooling in NHWC, while three 3x3
convolutions of 16-64 channels with batch norm train about 1.6x faster in it (2 cores of an
AMD EPYC Zen 4: benchmarks/layouts.py). No rule of thumb covers every LeNet-family shape, so,
as the kernel's guard does, the first time a model's shape meets a setting (torch, threads,
batch size bucket) `decide` times a training step on copies of the model in both layouts,
alternating them for about half a second,
and picks channels-last only where it is at least 10% faster. Decisions are cached as JSON in
lenet's cache folder (`LENET_CACHE_DIR`), so later runs on this machine skip the measuring.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import build
from .guard import Decision, KernelGuard, bucket

BUDGET_S = 0.5  # measuring time per new setting, about: the layouts differ by 2x or more

_SETTINGS: dict[str, Any] = {
    "budget_s": BUDGET_S, "forcible": False,  # LENET_NATIVE is about the kernel, not this
    "names": ("channels-last", "contiguous", "the contiguous layout is kept")}
_guards: dict[Path, KernelGuard] = {}


def cache_file() -> Path:
    return build.cache_dir() / "layout.guard.json"


def current() -> KernelGuard:
    """The layout guard, its decisions cached in lenet's cache folder (as it is now)."""
    path = cache_file()
    if path not in _guards:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _guards[path] = KernelGuard(path, **_SETTINGS)
        except OSError:  # nowhere to cache: measured once per process
            _guards[path] = KernelGuard(None, **_SETTINGS)
    return _guards[path]


def forget() -> None:
    """Drop this process's decisions (the cached files stay): for tests."""
    _guards.clear()


def shape_key(model: nn.Module, input_shape: tuple[int, ...], batch: int) -> str:
    """The decision's key: what the timing depends on, readable, with a digest of the layers."""
    digest = hashlib.sha1(repr(model).encode()).hexdigest()[:12]
    parameters = sum(p.numel() for p in model.parameters())
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, channels-last "
            f"vs contiguous, {type(model).__name__} {parameters:,} parameters (layers "
            f"{digest}), input {'x'.join(map(str, input_shape))}, forward+backward, "
            f"batch {bucket(batch)}")


def decide(model: nn.Module, input_shape: tuple[int, ...], batch: int) -> Decision:
    """Whether `model` (on the CPU; copied, never run) trains at least 10% faster in
    channels-last at `batch` images of `input_shape` (C, H, W): `use_kernel` says so."""
    return current().decide(shape_key(model, input_shape, batch),
                            lambda: contenders(model, input_shape, batch))


def known(model: nn.Module, input_shape: tuple[int, ...], batch: int) -> Decision | None:
    """This process's decision for `model` at `batch`, where it made or read one; never
    measures (for a run's record)."""
    return current().decisions.get(shape_key(model, input_shape, batch))


def contenders(model: nn.Module, input_shape: tuple[int, ...], batch: int
               ) -> tuple[Callable[[], None], Callable[[], None]]:
    """Two training steps (forward, loss, backward) doing the same work on copies of `model`:
    channels-last first, contiguous second."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *input_shape), generator=generator)
    steps = []
    for channels_last in (True, False):
        copied = copy.deepcopy(model).train()
        if channels_last:
            copied.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x

        def step(net: nn.Module = copied, inputs: torch.Tensor = inputs) -> None:
            net.zero_grad(set_to_none=True)
            out = net(inputs)
            F.cross_entropy(out, out.detach().argmax(dim=1)).backward()

        steps.append(step)
    return steps[0], steps[1]
