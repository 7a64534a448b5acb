"""Choosing where to compute: the best available device and the CPU thread count.

torch is imported by the functions that need it, so the command line reads
`DEVICE_CHOICES` and `available_cpus` without it (`lenet --help` stays fast).
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    import torch
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def pick_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; a named device must exist."""
    import torch
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here (try --device auto)")
    if kind == "mps" and not _mps_available():
        raise ConfigError(f"--device {name}: MPS is not available here (try --device auto)")
    if kind not in DEVICE_CHOICES[1:]:
        raise ConfigError(f"unknown device {name!r}; choose from {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None keeps torch's default); return the count in use."""
    import torch
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def describe(device: torch.device) -> str:
    """A short human description, e.g. 'cpu (x86_64, 2 threads)' or 'cuda:0 (NVIDIA H100)'."""
    import torch
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"

