"""A trained LeNet as framework-free layers in NHWC order, for Keras and Flax to rebuild.

PyTorch computes in (B, C, H, W) with conv kernels (out, in, kh, kw); Keras and
Flax compute in (B, H, W, C) with kernels (kh, kw, in, out) and dense kernels
(in, out). Besides those transposes, the first dense layer's input columns are
reordered, since flattening (C, H, W) and (H, W, C) lists the same features in
different orders. Batch norm (inference: a per-channel affine map) is folded
into the layer before it; dropout is the identity at inference and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import LenetError
from ..models import LeNet


@dataclass(frozen=True)
class Layer:
    """One layer: kind is conv, dense, act, pool or flatten; `params` are NHWC numpy."""

    kind: str
    name: str = ""
    params: dict[str, np.ndarray] = field(default_factory=dict)
    option: str = ""  # act: the activation; pool: avg or max
    size: int = 0  # conv: padding on each side; pool: window and stride


def _folded(weight: torch.Tensor, bias: torch.Tensor,
            norm: nn.Module | None) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a conv or linear layer followed by `norm` in inference mode."""
    w, b = weight.detach().double(), bias.detach().double()
    if norm is not None:
        if not isinstance(norm, _BatchNorm) or norm.running_mean is None \
                or norm.running_var is None:
            raise LenetError(f"cannot fold a {type(norm).__name__} into the layer before it: "
                             "not a batch norm with running statistics")
        scale = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
        w = w * scale.reshape(-1, *[1] * (w.ndim - 1))
        b = (b - norm.running_mean.double()) * scale + norm.bias.detach().double()
    return w.float().numpy(), b.float().numpy()


def plan(model: LeNet) -> list[Layer]:
    """The layers of `model` (a lenet LeNet), in order, in NHWC terms."""
    config = model.config
    layers_by_name = dict(model.named_children())
    out: list[Layer] = []
    for i, block in enumerate(model.conv_blocks(), start=1):
        w, b = _folded(block.conv.weight, block.conv.bias, block.norm)
        out.append(Layer("conv", f"conv{i}", {"kernel": w.transpose(2, 3, 1, 0), "bias": b},
                         size=config.paddings[i - 1]))
        out.append(Layer("act", option=config.activation))
        out.append(Layer("pool", option=config.pool, size=config.pool_size))
    out.append(Layer("flatten"))
    c, h, w_ = config.feature_shape()
    names = [f"fc{j}" for j in range(1, len(config.dense) + 1)] + ["output"]
    for j, name in enumerate(names):
        linear = layers_by_name[name]
        if not isinstance(linear, nn.Linear):
            raise LenetError(f"{name} is a {type(linear).__name__}, not a Linear layer")
        weight, bias = _folded(linear.weight, linear.bias, layers_by_name.get(f"{name}_bn"))
        if j == 0:  # columns in (C, H, W) order -> (H, W, C)
            weight = weight.reshape(-1, c, h, w_).transpose(0, 2, 3, 1).reshape(len(weight), -1)
        out.append(Layer("dense", name, {"kernel": np.ascontiguousarray(weight.T),
                                          "bias": bias}))
        if name != "output":
            out.append(Layer("act", option=config.activation))
    return out


def nhwc(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) tensor -> (N, H, W, C) float32 numpy, the exported models' input."""
    return np.ascontiguousarray(images.detach().cpu().permute(0, 2, 3, 1).numpy(), np.float32)
