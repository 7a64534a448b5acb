"""Several processes training one model: torch.distributed's process group, set up from
the environment `torchrun` (or `lenet train --nproc N`) gives each process.

    torchrun --nproc-per-node 2 -m lenet train ...      # one machine, 2 processes
    lenet train --nproc 2 ...                            # the same, launched by lenet

Each process is a rank of a world of WORLD_SIZE; torchrun sets RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT. `world()` joins the process group on first
use (gloo for CPU tensors, NCCL for CUDA ones) and leaves it when the process ends.
What lenet does with a world (run/fit.py):

- every rank builds the same model from the same seed; DistributedDataParallel
  (ddp.py: `wrap`) averages the gradients after each backward pass;
- each rank trains on its share of every global batch (lenet.data.loader.Batches.shard):
  the same seeded permutation everywhere, so `--batch-size` stays the global batch;
- loss and accuracy are sums and counts, all-reduced (`World.sum`) before they are
  read, so the record is a 1-process run's; every decision that changes control flow
  (stop, non-finite loss, target reached) is taken on reduced values, so no rank
  waits in an all-reduce that another has left;
- batch norm normalises over the global batch (batch_norm.py: PyTorch's SyncBatchNorm
  on GPUs, `GlobalBatchNorm*` elsewhere);
- rank 0 alone writes (the run directory, checkpoints, curves, TensorBoard).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ..errors import ConfigError, LenetError, ReportedElsewhere

T = TypeVar("T")
# Seconds a collective (and joining the group) may wait for the other ranks before the
# process fails: a rank that died or never came must not leave the others hanging.
TIMEOUT_S = float(os.environ.get("LENET_DIST_TIMEOUT", "600"))


@dataclass(frozen=True)
class World:
    """This process's place among those training one model (1 of 1 when alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # rank on this machine: which GPU it takes
    backend: str | None = None  # None: no process group

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """For the run record."""
        return {"world_size": self.size, "backend": self.backend,
                "nodes": int(os.environ.get("GROUP_WORLD_SIZE", "0")) or None,
                "rendezvous": os.environ.get("TORCHELASTIC_RUN_ID")}

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over every rank (in place; returned)."""
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def any(self, flag: bool) -> bool:
        """Whether `flag` holds on any rank (the same answer everywhere)."""
        if not self.distributed:
            return flag
        return bool(self.sum(torch.tensor([float(flag)])).item())

    def from_main(self, make: Callable[[], T]) -> T:
        """`make()` run on rank 0 alone, its value (picklable) given to every rank; an
        expected error there is raised on every rank."""
        if not self.distributed:
            return make()
        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = ("ok", make())
            except LenetError as e:
                box[0] = ("error", str(e))
        dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
        kind, value = box[0]
        if kind == "error":
            if not self.main:  # rank 0 says it; this rank ends with the same status
                raise ReportedElsewhere(value)
            raise ConfigError(value)
        return value


ALONE = World()


def world() -> World:
    """This process's world: from torchrun's environment (joining the process group the
    first time), else one process alone."""
    if not dist.is_available():
        return ALONE
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return ALONE
        # Gloo carries CPU tensors, NCCL CUDA ones: one group serves either device.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=TIMEOUT_S))
        except (ValueError, RuntimeError) as e:  # no MASTER_ADDR, a rendezvous timed out
            raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} asks for several "
                              f"processes, but this one could not join them ({e}); start "
                              "them with torchrun or lenet train --nproc") from e
        atexit.register(leave)
    return World(dist.get_rank(), dist.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", "0")), str(dist.get_backend()))


def leave() -> None:
    """Leave the process group (at exit; again is harmless)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(device: torch.device, world: World) -> torch.device:
    """Each rank on a machine takes its own GPU (cuda:LOCAL_RANK); CPUs are shared."""
    if device.type != "cuda" or not world.distributed:
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"rank {world.rank} wants GPU {world.local_rank}, but this machine "
                          f"has {torch.cuda.device_count()}: start at most that many "
                          "processes per node")
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


def check_batch(batch_size: int, examples: int, world: World) -> None:
    """The global batch must divide among the ranks, and so must the last, shorter one
    (at least one example each)."""
    if not world.distributed:
        return
    if batch_size % world.size:
        raise ConfigError(f"--batch-size {batch_size} does not divide among {world.size} "
                          f"processes: --batch-size is the global batch, each process takes "
                          f"batch/{world.size}; choose a multiple of {world.size}")
    last = examples % batch_size
    if 0 < last < world.size:
        raise ConfigError(f"the last batch of the epoch ({last} of {examples} examples) "
                          f"cannot give each of {world.size} processes an example; choose "
                          "another --batch-size")


def rank_seed(seed: int, world: World, epoch: int, step: int) -> None:
    """Ranks other than 0 draw dropout from a stream of their own (rank 0 keeps the run's),
    started afresh where a run starts or resumes (`epoch`, `step`): the same masks on
    every rank would repeat across the global batch."""
    if world.distributed and not world.main:
        torch.manual_seed(((seed * 1_000_003 + epoch) * 100_003 + step) * 1_009 + world.rank)
