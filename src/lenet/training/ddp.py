"""DistributedDataParallel for a world of several processes (distributed.py): the model
wrapped, and its gradients averaged through shared memory where every rank is on this
machine's CPU (native/shm_reduce: one copy and one add a step, not gloo's all-reduce of
about 1.5 ms), else through gloo or NCCL. `LENET_DIST_SHM=0` keeps gloo."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .distributed import TIMEOUT_S, World


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

    shared = segment  # mapped by every rank (checked above)
    assert shared is not None

    # (unannotated: DDP checks annotations against its types, which this module's
    # postponed annotations would turn into strings)
    def mean_of_ranks(state, bucket):
        buffer = bucket.buffer()
        if buffer.dtype != torch.float32:  # (a model in float64, say): gloo's
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
            return default_hooks.allreduce_hook(state, bucket)  # state None: the default group
        future: torch.futures.Future[torch.Tensor] = torch.futures.Future()
        future.set_result(shared.mean_(buffer, TIMEOUT_S))
        return future

    ddp.register_comm_hook(None, mean_of_ranks)
    return "shared memory (lenet.native.shm_reduce; gloo for everything else)"
