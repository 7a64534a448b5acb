"""The book's own models on lenet's fused conv kernel.

The chapter builds LeNet-5 as a plain `nn.Sequential` (`net = nn.Sequential(conv,
act, pool, conv, act, pool, flatten, ...)`, or `self.net` of a `d2l.Classifier`). Its
layers have no names, so they are read here by position and type, as conv blocks
(conv, [batch norm], activation, pool); `lenet.native.fastpath.KernelPath` decides
whether they are the blocks the kernel computes. The user's `net` is left as it is
(its class, layers and parameters): `SequentialKernel` calls it, or calls the kernel
and then the layers after the blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.network import ConvBlock
from ..native.fastpath import KernelPath


def leading_conv_blocks(net: nn.Sequential) -> tuple[list[ConvBlock], list[nn.Module]]:
    """The conv blocks `net` starts with (conv, [BatchNorm2d], activation, pool each), and
    the layers after them."""
    layers, blocks, k = list(net), [], 0
    while k + 2 < len(layers) and isinstance(layers[k], nn.Conv2d):
        norm = layers[k + 1] if isinstance(layers[k + 1], nn.BatchNorm2d) else None
        start = k + (2 if norm is not None else 1)
        if start + 1 >= len(layers):
            break
        blocks.append(ConvBlock(layers[k], norm, layers[start], layers[start + 1]))
        k = start + 2
    return blocks, layers[k:]


class SequentialKernel:
    """`net` (the book's Sequential) with its first two conv blocks in the fused kernel
    wherever a call allows, else `net` itself; same parameters, same results."""

    def __init__(self, net: nn.Sequential, path: KernelPath, rest: list[nn.Module]) -> None:
        self.net, self.path, self.rest = net, path, rest

    @classmethod
    def of(cls, net: nn.Module | None) -> SequentialKernel | None:
        """For a Sequential that starts with LeNet-5's conv blocks as the kernel has them
        (call it after `prepare_model`, which swaps the pools), else None."""
        if type(net) is not nn.Sequential:
            return None
        blocks, rest = leading_conv_blocks(net)
        path = KernelPath.of(blocks)
        if path is None:
            return None
        rest = [layer for block in blocks[path.blocks:] for layer in block.layers()] + rest
        return cls(net, path, rest)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.path(x)
        if out is None:
            return self.net(x)
        for layer in self.rest:
            out = layer(out)
        return out


class Trained(nn.Module):
    """`net` trained through `forward` (train_ch6 hands this to lenet's training loop)."""

    def __init__(self, net: nn.Module, forward: SequentialKernel) -> None:
        super().__init__()
        self.net = net
        self.fast = forward  # (a plain object: not a submodule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fast(x)
