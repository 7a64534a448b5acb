"""Making a model train fast on its device without changing what it computes.

On the CPU, LeNet's step is bound by oneDNN's kernels for tiny feature maps,
not by arithmetic. Two changes measurably help there (benchmarks/train_speed.py,
alternating epochs, 2 cores):

- channels-last memory layout: oneDNN's NHWC convolutions beat NCHW (~1.15x);
- 2x2/stride-2 average pooling as a depthwise convolution with weights 1/4:
  the same sums (bit-identical weights after 4 epochs of LeNet-5), ~1.1x faster
  forward and backward than `avg_pool2d` on NHWC data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AvgPool2d(nn.AvgPool2d):
    """`nn.AvgPool2d` (kernel == stride, no padding) computed as a depthwise convolution.

    It keeps the class name, repr and behaviour of the module it replaces, so
    summaries and printed models read the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H/k, W/k)
        k = self.kernel_size
        weight = x.new_full((x.shape[1], 1, k, k), 1.0 / (k * k))
        return F.conv2d(x, weight, stride=k, groups=x.shape[1])

    @staticmethod
    def can_replace(pool: nn.Module) -> bool:
        return (type(pool) is nn.AvgPool2d and isinstance(pool.kernel_size, int)
                and pool.stride in (pool.kernel_size, (pool.kernel_size,) * 2)
                and pool.padding in (0, (0, 0)) and not pool.ceil_mode
                and pool.divisor_override is None)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move `model` to `device` and lay it out to train fastest there (in place)."""
    model.to(device)
    if device.type == "cpu":
        for parent in model.modules():
            for name, child in parent.named_children():
                if AvgPool2d.can_replace(child):
                    setattr(parent, name, AvgPool2d(child.kernel_size, child.kernel_size))
        model.to(memory_format=torch.channels_last)
    return model
