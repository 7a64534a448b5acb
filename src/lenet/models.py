"""LeNet-family models: a frozen configuration, the network it builds, and named variants.

A `ModelConfig` says everything about the architecture; `build_model(config)`
makes an initialised `LeNet` with explicit layer sizes (no lazy layers), so a
checkpoint that stores the config rebuilds the model alone. Layers are named
(`conv1`, `act1`, `pool1`, ..., `fc1`, ..., `output`) so that summaries,
activation hooks and initialisation walk them by name. `LeNet.conv_blocks()`
gives each conv block's layers by role, which is how a fused kernel
(lenet.native) finds what it computes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, get_args

import torch
from torch import nn

from .errors import ConfigError
from .model_settings import Activation, Init, ModelSettings, Pool

ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
POOLS: dict[Pool, type[nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
INITS: tuple[Init, ...] = get_args(Init)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a LeNet-style network: conv blocks, then dense layers.

    Each conv block is conv -> [batch norm] -> activation -> pool; `channels`,
    `kernel_sizes` and `paddings` have one entry per block. Each hidden dense
    layer is linear -> [batch norm] -> activation -> [dropout].
    """

    channels: tuple[int, ...] = (6, 16)
    kernel_sizes: tuple[int, ...] = (5, 5)
    paddings: tuple[int, ...] = (2, 0)
    activation: Activation = "sigmoid"
    pool: Pool = "avg"
    pool_size: int = 2
    dense: tuple[int, ...] = (120, 84)
    num_classes: int = 10
    in_channels: int = 1
    input_size: tuple[int, int] = (28, 28)
    batch_norm: bool = False
    dropout: float = 0.0
    init: Init = "xavier"  # the book's init_cnn: Xavier-uniform weights

    def __post_init__(self) -> None:
        if not self.channels:
            raise ConfigError("a LeNet needs at least one convolution layer (channels is empty)")
        for name in ("kernel_sizes", "paddings"):
            if len(getattr(self, name)) != len(self.channels):
                raise ConfigError(f"{name} has {len(getattr(self, name))} entries but channels "
                                  f"has {len(self.channels)}: give one per convolution layer")
        positive = {"channels": self.channels, "kernel_sizes": self.kernel_sizes,
                    "dense": self.dense, "input_size": self.input_size,
                    "num_classes": (self.num_classes,), "in_channels": (self.in_channels,),
                    "pool_size": (self.pool_size,)}
        for name, values in positive.items():
            if any(v < 1 for v in values):
                raise ConfigError(f"{name} must be positive, got {values}")
        if any(p < 0 for p in self.paddings):
            raise ConfigError(f"paddings must be >= 0, got {self.paddings}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; "
                              f"choose from {', '.join(ACTIVATIONS)}")
        if self.pool not in POOLS:
            raise ConfigError(f"unknown pool {self.pool!r}; choose from {', '.join(POOLS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init not in INITS:
            raise ConfigError(f"unknown init {self.init!r}; choose from {', '.join(INITS)}")
        self.feature_shape()  # fail now, naming the layer, if a map shrinks to nothing

    def feature_shape(self) -> tuple[int, int, int]:
        """(C, H, W) after the last conv block; raises ConfigError naming a layer that fails."""
        h, w = self.input_size
        for i, (k, p) in enumerate(zip(self.kernel_sizes, self.paddings, strict=True), start=1):
            if k > h + 2 * p or k > w + 2 * p:
                raise ConfigError(f"conv{i}: {k}x{k} kernel is larger than its padded input "
                                  f"{h + 2 * p}x{w + 2 * p}")
            h, w = h + 2 * p - k + 1, w + 2 * p - k + 1
            if h < self.pool_size or w < self.pool_size:
                raise ConfigError(f"pool{i}: {self.pool_size}x{self.pool_size} pooling of a "
                                  f"{h}x{w} map leaves nothing")
            h, w = h // self.pool_size, w // self.pool_size
        return self.channels[-1], h, w

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model option(s): {', '.join(sorted(unknown))}")
        # JSON and checkpoints store tuples as lists.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


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
        act, pool = ACTIVATIONS[config.activation], POOLS[config.pool]
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
        if features is None:
            return super().forward(x)
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


# Named variants: the CLI's --model choices, the docs and the tests all read this.
MODELS: dict[str, ModelConfig] = {
    # The book's LeNet-5: sigmoid, average pooling, 61,706 parameters.
    "lenet5": ModelConfig(),
    # The chapter's first exercise: ReLU and max-pooling, same widths.
    "lenet5-modern": ModelConfig(activation="relu", pool="max"),
    # The best LeNet-family model under 100,000 parameters we found
    # (sweeps/best-under-100k.toml): three 3x3 convolutions with batch norm,
    # max-pooling, one dense layer of 128 with dropout; 98,922 parameters.
    "lenet-100k": ModelConfig(channels=(16, 32, 64), kernel_sizes=(3, 3, 3), paddings=(1, 1, 1),
                              activation="relu", pool="max", dense=(128,), batch_norm=True,
                              dropout=0.2),
}


def with_settings(config: ModelConfig,
                  settings: ModelSettings | Mapping[str, Any]) -> ModelConfig:
    """`config` changed by model settings (typed, or `{key: text}` as `--set` gives them)."""
    if not isinstance(settings, ModelSettings):
        settings = ModelSettings.from_dict(settings)
    return settings.apply(config)


def resolve_model_config(name: str, settings: ModelSettings | None = None, *,
                         num_classes: int | None = None,
                         input_size: tuple[int, int] | None = None) -> ModelConfig:
    """The one place a model's configuration is resolved: the registered variant `name`,
    changed by `settings`, then sized for the data (its classes and image size)."""
    sized = {"num_classes": num_classes, "input_size": tuple(input_size) if input_size else None}
    return (settings or ModelSettings()).apply(
        get_model_config(name), **{k: v for k, v in sized.items() if v is not None})


def get_model_config(name: str) -> ModelConfig:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}") from None
