"""Several processes training one model: torch.distributed's process group, set up from
the environment `torchrun` (or `lenet train --nproc N`) gives each process.

    torchrun --nproc-per-node 2 -m lenet train ...      # one machine, 2 processes
    lenet train --nproc 2 ...                            # the same, launched by lenet

Each process is a rank of a world of WORLD_SIZE; torchrun sets RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT. `world()` joins the process group on first
use (gloo for CPU tensors, NCCL for CUDA ones) and leaves it when the process ends.
What lenet does with a world (fitting.py):

- every rank builds the same model from the same seed; DistributedDataParallel
  (`wrap`) averages the gradients after each backward pass;
- each rank trains on its share of every global batch (lenet.data.loader.Batches.shard):
  the same seeded permutation everywhere, so `--batch-size` stays the global batch;
- loss and accuracy are sums and counts, all-reduced (`World.sum`) before they are
  read, so the record is a 1-process run's; every decision that changes control flow
  (stop, non-finite loss, target reached) is taken on reduced values, so no rank
  waits in an all-reduce that another has left;
- batch norm normalises over the global batch (`sync_batch_norm`: PyTorch's
  SyncBatchNorm on GPUs, `GlobalBatchNorm*` below elsewhere);
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
from torch import nn

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


def wrap(model: nn.Module, device: torch.device, world: World) -> tuple[nn.Module, str | None]:
    """`model` as it trains in this world, and how its gradients are summed (for the run
    record; None alone): itself alone; else DistributedDataParallel, which averages the
    gradients over the ranks after each backward (its hooks fire on every parameter's
    gradient, the fused kernel's included: they are ordinary .grad tensors). LeNet's
    61,706 parameters (247 KB) fit one bucket: one all-reduce per step, through shared
    memory where every rank is on this machine's CPU (`shared_memory_sum`)."""
    if not world.distributed:
        return model, None
    # Buffers (batch norm's running statistics) go from rank 0 to the others before each
    # forward pass: DDP's default.
    ddp = nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        gradient_as_bucket_view=True)
    return ddp, shared_memory_sum(ddp, device, world)


SHM_ENV = "LENET_DIST_SHM"  # 0: gradients through gloo even where memory could be shared


def shared_memory_sum(ddp: nn.parallel.DistributedDataParallel, device: torch.device,
                      world: World) -> str:
    """Sum `ddp`'s gradients through memory the ranks share (lenet.native.shm_reduce) where
    they can: all on this machine (torchrun's LOCAL_WORLD_SIZE is the world), on the CPU,
    with the library built. Gloo's all-reduce costs ~1.5 ms however small the tensor, as
    much as a LeNet-5 step; this costs microseconds. The same decision on every rank; what
    was decided, for the run record."""
    backend = str(dist.get_backend())
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "0")) == world.size
    if os.environ.get(SHM_ENV, "").strip() in ("0", "false", "no", "off"):
        return f"{backend} ({SHM_ENV}=0)"
    if device.type != "cpu" or not local:
        return backend
    from ..native import shm_reduce

    capacity = max(1, min(sum(p.numel() for p in ddp.parameters()), 1 << 22))
    why_not = None
    segment = None
    if world.main:  # rank 0 makes the segment; the others map it by its path
        try:
            segment = (shm_reduce.Segment.create(world.size, capacity)
                       if shm_reduce.library() is not None else None)
        except OSError as e:
            why_not = f"no shared memory: {e}"
        why_not = why_not or shm_reduce.why_not()
    box: list[Any] = [None if segment is None else str(segment.path)]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    if box[0] is not None and not world.main:
        try:
            segment = (shm_reduce.Segment.attach(box[0], world.rank, world.size, capacity)
                       if shm_reduce.library() is not None else None)
        except OSError:
            segment = None
    failed = world.any(box[0] is not None and segment is None)  # also a barrier
    if segment is not None and world.main:
        segment.unlink()  # every rank has mapped it (or given up): nothing is left behind
    if box[0] is None or failed:
        return f"{backend} (shared memory not used: {why_not or 'a rank could not map it'})"

    # (unannotated: DDP checks annotations against its types, which this module's
    # postponed annotations would turn into strings)
    def mean_of_ranks(state, bucket):  # type: ignore[no-untyped-def]
        buffer = bucket.buffer()
        if buffer.dtype != torch.float32:  # (a model in float64, say): gloo's
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
            return default_hooks.allreduce_hook(None, bucket)
        future: torch.futures.Future = torch.futures.Future()
        future.set_result(segment.mean_(buffer, TIMEOUT_S))
        return future

    ddp.register_comm_hook(None, mean_of_ranks)
    return "shared memory (lenet.native.shm_reduce; gloo for everything else)"


class _GlobalStatistics:
    """Batch norm whose training statistics are the global batch's: each rank's sums,
    all-reduced (differentiably: the gradient is the global batch's too). PyTorch's
    SyncBatchNorm does this on GPUs only; this is the same on any device, in two
    all-reduces forward and two backward per layer. State and keys are BatchNorm's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C) or (B, C, H, W)
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        sums = all_reduce(torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])]))
        n, mean = sums[-1], sums[:-1] / sums[-1]  # examples (x positions) in the global batch
        centered = x - mean.view(shape)
        var = all_reduce((centered * centered).sum(dims)) / n  # two passes, as PyTorch's
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (self.momentum if self.momentum is not None  # None: the mean
                            else 1.0 / float(self.num_batches_tracked))
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * n / (n - 1), momentum)  # unbiased, as PyTorch's
        return y


class GlobalBatchNorm1d(_GlobalStatistics, nn.BatchNorm1d):
    pass


class GlobalBatchNorm2d(_GlobalStatistics, nn.BatchNorm2d):
    pass


def sync_batch_norm(model: nn.Module, device: torch.device, world: World) -> tuple[nn.Module,
                                                                                    str | None]:
    """Batch norm over the global batch, in place: PyTorch's SyncBatchNorm on GPUs, the
    Global* layers above elsewhere; and what was done, for the run record (None: no
    batch norm, or one process)."""
    kinds = {nn.BatchNorm1d: GlobalBatchNorm1d, nn.BatchNorm2d: GlobalBatchNorm2d}
    if not world.distributed or not any(type(m) in kinds for m in model.modules()):
        return model, None
    if device.type == "cuda":
        return (nn.SyncBatchNorm.convert_sync_batchnorm(model),
                "SyncBatchNorm: statistics over the global batch")
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) in kinds:
                norm = kinds[type(child)](child.num_features, child.eps, child.momentum,
                                          child.affine, child.track_running_stats)
                norm.load_state_dict(child.state_dict())
                setattr(parent, name, norm)
    return model, ("statistics over the global batch (lenet.training.distributed.GlobalBatchNorm; "
                   "PyTorch's SyncBatchNorm runs on GPUs only); the fused kernel, whose "
                   "statistics are one process's, is not used")


def sync_buffers(model: nn.Module, world: World) -> None:
    """Give every rank rank 0's buffers (batch norm's running statistics), as DDP does
    before each training forward: evaluation then sees the same model everywhere."""
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def rank_seed(seed: int, world: World, epoch: int, step: int) -> None:
    """Ranks other than 0 draw dropout from a stream of their own (rank 0 keeps the run's),
    started afresh where a run starts or resumes (`epoch`, `step`): the same masks on
    every rank would repeat across the global batch."""
    if world.distributed and not world.main:
        torch.manual_seed(((seed * 1_000_003 + epoch) * 100_003 + step) * 1_009 + world.rank)
