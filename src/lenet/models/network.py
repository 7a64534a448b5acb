"""The network a `ModelConfig` describes: LeNet, its conv blocks by role, initialisation.

A `ModelConfig` (config.py) says everything about the architecture; `build_model(config)`
makes an initialised `LeNet` with explicit layer sizes (no lazy layers), so a
checkpoint that stores the config rebuilds the model alone. Layers are named
(`conv1`, `act1`, `pool1`, ..., `fc1`, ..., `output`) so that summaries,
activation hooks and initialisation walk them by name. `LeNet.conv_blocks()`
gives each conv block's layers by role, which is how a fused kernel
(lenet.native) finds what it computes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .config import Activation, ModelConfig, Pool

ACTIVATION_LAYERS: dict[Activation, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
POOL_LAYERS: dict[Pool, type[nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


@dataclass(frozen=True)
class ConvBlock:
    """One conv block's layers by role: conv -> [batch norm] -> activation -> pool."""

    conv: nn.Module
    norm: nn.Module | None
    act: nn.Module
    pool: nn.Module

    def layers(self) -> list[nn.Module]:
        return [m for m in (self.conv, self.norm, self.act, self.pool) if m is not None]


class BlocksKernel(Protocol):
    """Something that computes a LeNet's first `blocks` conv blocks in one call."""

    blocks: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        """Their output for `x`, or None where this call must run layer by layer."""


class LeNet(nn.Sequential):
    """A LeNet-style CNN; input (B, in_channels, H, W), output logits (B, num_classes).

    `blocks_kernel`, None unless lenet.native.prepare_model sets it, computes the
    first conv blocks in one call where a forward allows; the layers, their names and
    the parameters stay the same either way.
    """

    blocks_kernel: BlocksKernel | None = None

    def __init__(self, config: ModelConfig) -> None:
        act, pool = ACTIVATION_LAYERS[config.activation], POOL_LAYERS[config.pool]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch = config.in_channels
        for i, (out_ch, k, p) in enumerate(
            zip(config.channels, config.kernel_sizes, config.paddings, strict=True), start=1
        ):
            layers[f"conv{i}"] = nn.Conv2d(in_ch, out_ch, kernel_size=k, padding=p)
            if config.batch_norm:
                layers[f"bn{i}"] = nn.BatchNorm2d(out_ch)
            layers[f"act{i}"] = act()
            layers[f"pool{i}"] = pool(kernel_size=config.pool_size, stride=config.pool_size)
            in_ch = out_ch
        layers["flatten"] = nn.Flatten()
        c, h, w = config.feature_shape()
        width = c * h * w
        for j, out in enumerate(config.dense, start=1):
            layers[f"fc{j}"] = nn.Linear(width, out)
            if config.batch_norm:
                layers[f"fc{j}_bn"] = nn.BatchNorm1d(out)
            layers[f"fc{j}_act"] = act()
            if config.dropout:
                layers[f"fc{j}_drop"] = nn.Dropout(config.dropout)
            width = out
        layers["output"] = nn.Linear(width, config.num_classes)
        super().__init__(layers)
        self.config = config

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def conv_blocks(self) -> list[ConvBlock]:
        """Each conv block's layers, by name (`conv1`, `bn1`, `act1`, `pool1`, ...)."""
        layers = dict(self.named_children())
        return [ConvBlock(layers[f"conv{i}"], layers.get(f"bn{i}"), layers[f"act{i}"],
                          layers[f"pool{i}"]) for i in range(1, len(self.config.channels) + 1)]

    def layers_after(self, name: str) -> list[nn.Module]:
        """The layers that follow the one named `name`, in order."""
        names = [n for n, _ in self.named_children()]
        return list(self)[names.index(name) + 1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        kernel = self.blocks_kernel
        features = kernel(x) if kernel is not None else None
        if kernel is None or features is None:
            # torch leaves Sequential.forward unannotated
            out: torch.Tensor = super().forward(x)  # type: ignore[no-untyped-call]
            return out
        for layer in self.layers_after(f"pool{kernel.blocks}"):
            features = layer(features)
        return features


def init_weights(model: nn.Module, scheme: str = "xavier") -> None:
    """Initialise conv and linear weights: 'xavier' (uniform, as the book's init_cnn),
    'kaiming' (He normal, for ReLU), or 'default' (PyTorch's). Biases keep PyTorch's."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            if scheme == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")


def build_model(config: ModelConfig, *, seed: int | None = None) -> LeNet:
    """An initialised LeNet; `seed` makes the initial weights reproducible."""
    if seed is None:
        return _build(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(config)


def _build(config: ModelConfig) -> LeNet:
    model = LeNet(config)
    init_weights(model, config.init)
    return model
