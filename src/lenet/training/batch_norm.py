"""Batch norm over the global batch of a world of several processes (distributed.py):
PyTorch's SyncBatchNorm on GPUs, the Global* layers here elsewhere (gloo)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, cast

import torch
import torch.distributed as dist
from torch import nn

from .distributed import World

if TYPE_CHECKING:  # the mixin's attributes and forward are batch norm's
    _Base = nn.modules.batchnorm._BatchNorm
else:
    _Base = object


class _GlobalStatistics(_Base):
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
        count, running_mean, running_var = (self.num_batches_tracked, self.running_mean,
                                            self.running_var)
        if self.track_running_stats:  # then batch norm keeps all three buffers
            assert count is not None and running_mean is not None and running_var is not None
            with torch.no_grad():
                count += 1
                momentum = (self.momentum if self.momentum is not None  # None: the mean
                            else 1.0 / float(count))
                running_mean.lerp_(mean, momentum)
                running_var.lerp_(var * n / (n - 1), momentum)  # unbiased, as PyTorch's
        return y


class GlobalBatchNorm1d(_GlobalStatistics, nn.BatchNorm1d):
    pass


class GlobalBatchNorm2d(_GlobalStatistics, nn.BatchNorm2d):
    pass


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def sync_batch_norm(model: ModuleT, device: torch.device,
                    world: World) -> tuple[ModuleT, str | None]:
    """Batch norm over the global batch, in place: PyTorch's SyncBatchNorm on GPUs, the
    Global* layers above elsewhere; and what was done, for the run record (None: no
    batch norm, or one process)."""
    kinds: dict[type[nn.Module], type[GlobalBatchNorm1d] | type[GlobalBatchNorm2d]] = {
        nn.BatchNorm1d: GlobalBatchNorm1d, nn.BatchNorm2d: GlobalBatchNorm2d}
    if not world.distributed or not any(type(m) in kinds for m in model.modules()):
        return model, None
    if device.type == "cuda":
        return (cast(ModuleT, nn.SyncBatchNorm.convert_sync_batchnorm(model)),
                "SyncBatchNorm: statistics over the global batch")
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d) and type(child) in kinds:
                norm = kinds[type(child)](child.num_features, child.eps, child.momentum,
                                          child.affine, child.track_running_stats)
                norm.load_state_dict(child.state_dict())
                setattr(parent, name, norm)
    return model, ("statistics over the global batch (lenet.training.batch_norm.GlobalBatchNorm; "
                   "PyTorch's SyncBatchNorm runs on GPUs only); the fused kernel, whose "
                   "statistics are one process's, is not used")


def sync_buffers(model: nn.Module, world: World) -> None:
    """Give every rank rank 0's buffers (batch norm's running statistics), as DDP does
    before each training forward: evaluation then sees the same model everywhere."""
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
