"""A sum over the processes of one machine through shared memory (shm_reduce.c): what DDP's
gradient all-reduce costs there, down from gloo's ~1.5 ms a step to microseconds.

    segment = Segment.create(ranks=2, capacity=61_706)   # rank 0; its path to the others
    segment = Segment.attach(path, rank, ranks, capacity)  # every other rank
    segment.unlink()                                        # once all have attached
    segment.mean_(tensor)                                   # every rank, same order of calls

The segment is a file in /dev/shm (the temporary folder where there is none), mapped by
every rank; rank 0 removes its name once all have mapped it, so that nothing is left
behind however the processes end. lenet.training.distributed decides where it is used.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import tempfile
import uuid
from functools import cache
from pathlib import Path

import torch

from . import build

ABI_VERSION = 1
_why: dict[str, str | None] = {}  # why `library()` is None


@cache
def library() -> ctypes.CDLL | None:
    """The compiled shm_reduce.c, or None when it cannot be built (`why_not` says why)."""
    lib, _why["not"] = build.checked_library("shm_reduce", ABI_VERSION)
    if lib is not None:
        lib.shm_reduce_bytes.restype = ctypes.c_long
        lib.shm_reduce_bytes.argtypes = [ctypes.c_int, ctypes.c_long]
        lib.shm_allreduce_f32.restype = ctypes.c_int
        lib.shm_allreduce_f32.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_long, ctypes.c_void_p, ctypes.c_long,
                                          ctypes.c_double]
    return lib


def describe() -> str:
    """Whether DDP on one machine's CPUs can average through shared memory (lenet doctor)."""
    if library() is None:
        return f"not built ({why_not()}): gloo's all-reduce"
    return "compiled: DDP on one machine's CPUs averages gradients through shared memory"


def why_not() -> str | None:
    """Why `library()` is None (None when it is not)."""
    return None if library() is not None else _why.get("not") or "not built"


def _folder() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class Segment:
    """One rank's view of the memory the ranks of a machine share."""

    def __init__(self, path: Path, rank: int, ranks: int, capacity: int, fd: int) -> None:
        lib = library()
        assert lib is not None, "Segment needs the compiled library (see why_not)"
        self.path, self.rank, self.ranks, self.capacity = path, rank, ranks, capacity
        self._lib = lib
        size = lib.shm_reduce_bytes(ranks, capacity)
        try:
            if rank == 0:
                os.ftruncate(fd, size)  # zeros: every counter starts at 0
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the mapping outlives the descriptor
        self._base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))

    @classmethod
    def create(cls, ranks: int, capacity: int) -> Segment:
        """Rank 0's: a new segment for `ranks` processes and up to `capacity` floats a round
        (longer tensors go round by round)."""
        path = _folder() / f"lenet-reduce-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            return cls(path, 0, ranks, capacity, fd)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    @classmethod
    def attach(cls, path: str | Path, rank: int, ranks: int, capacity: int) -> Segment:
        return cls(Path(path), rank, ranks, capacity, os.open(path, os.O_RDWR))

    def unlink(self) -> None:
        """Remove the segment's name (the mappings stay): after every rank has attached."""
        self.path.unlink(missing_ok=True)

    def mean_(self, tensor: torch.Tensor, timeout_s: float) -> torch.Tensor:
        """`tensor` (float32, contiguous, CPU) replaced, in place, by the mean of every rank's
        `tensor`: the same bits on every rank. Every rank must call it, in the same order.
        Raises TimeoutError when a rank has not come within `timeout_s` seconds."""
        if tensor.dtype != torch.float32 or not tensor.is_contiguous() or tensor.is_cuda:
            raise ValueError("the shared-memory sum takes contiguous float32 CPU tensors")
        if self._lib.shm_allreduce_f32(self._base, self.rank, self.ranks, self.capacity,
                                       tensor.data_ptr(), tensor.numel(), timeout_s):
            raise TimeoutError(f"rank {self.rank}: the other processes did not reach the "
                               f"gradient sum within {timeout_s:g} s (has one of them died?)")
        return tensor
