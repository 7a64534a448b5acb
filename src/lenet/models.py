"""LeNet-family models: a frozen configuration, the network it builds, and named variants.

A `ModelConfig` says everything about the architecture; `build_model(config)`
makes an initialised `LeNet` with explicit layer sizes (no lazy layers), so a
checkpoint that stores the config rebuilds the model alone. Layers are named
(`conv1`, `act1`, `pool1`, ..., `fc1`, ..., `output`) so that summaries,
activation hooks and initialisation walk them by name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}
POOLS: dict[str, type[nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
INITS = ("xavier", "kaiming", "default")


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
    activation: str = "sigmoid"
    pool: str = "avg"
    pool_size: int = 2
    dense: tuple[int, ...] = (120, 84)
    num_classes: int = 10
    in_channels: int = 1
    input_size: tuple[int, int] = (28, 28)
    batch_norm: bool = False
    dropout: float = 0.0
    init: str = "xavier"  # the book's init_cnn: Xavier-uniform weights

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


class LeNet(nn.Sequential):
    """A LeNet-style CNN; input (B, in_channels, H, W), output logits (B, num_classes)."""

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


# `--set KEY=VALUE` names -> ModelConfig fields (aliases for the chapter's exercise words).
SETTABLE = {
    "activation": "activation", "pool": "pool", "pool_size": "pool_size",
    "channels": "channels", "kernel": "kernel_sizes", "kernels": "kernel_sizes",
    "kernel_sizes": "kernel_sizes", "padding": "paddings", "paddings": "paddings",
    "dense": "dense", "batch_norm": "batch_norm", "bn": "batch_norm", "dropout": "dropout",
    "init": "init", "classes": "num_classes", "num_classes": "num_classes",
}
PER_LAYER = ("kernel_sizes", "paddings")


def _parse_value(field: str, text: str) -> Any:
    """A `--set` value as the type of `field`."""
    text = text.strip()
    try:
        if field in ("channels", "dense", "kernel_sizes"):
            return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
        if field == "paddings":
            return tuple(v.strip() if v.strip() == "same" else int(v)
                         for v in text.split(",") if v.strip())
        if field in ("pool_size", "num_classes"):
            return int(text)
        if field == "dropout":
            return float(text)
        if field == "batch_norm":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError
            return text.lower() in ("true", "1", "yes", "on")
    except ValueError:
        raise ConfigError(f"--set {field}={text}: not a valid value") from None
    return text


def with_settings(config: ModelConfig, settings: Mapping[str, str]) -> ModelConfig:
    """`config` changed by `--set KEY=VALUE` settings; per-layer values are broadcast.

    A single kernel or padding applies to every convolution. When the number of
    convolutions changes and no padding is given, each uses 'same' padding
    (kernel // 2), so the maps keep their size until pooling.
    """
    values: dict[str, Any] = {}
    for key, text in settings.items():
        field = SETTABLE.get(key.strip().lower().replace("-", "_"))
        if field is None:
            raise ConfigError(f"--set {key}: unknown setting; choose from {', '.join(SETTABLE)}")
        values[field] = _parse_value(field, text)
    n = len(values.get("channels", config.channels))
    kernels = values.get("kernel_sizes", config.kernel_sizes)
    if len(kernels) == 1 or (n != len(config.channels) and "kernel_sizes" not in values):
        kernels = (kernels[0],) * n
    if "paddings" in values:
        paddings = values["paddings"]
        if len(paddings) == 1:
            paddings = paddings * n
    elif n != len(config.channels) or "kernel_sizes" in values:
        paddings = ("same",) * n
    else:
        paddings = config.paddings
    paddings = tuple(k // 2 if p == "same" else p for p, k in zip(paddings, kernels,
                                                                   strict=False))
    values.update(kernel_sizes=tuple(kernels), paddings=paddings)
    return ModelConfig.from_dict({**config.to_dict(), **values})


def parse_settings(items: Iterable[str]) -> dict[str, str]:
    """['activation=relu', 'channels=16,32'] -> {'activation': 'relu', ...}."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set activation=relu")
        settings[key.strip()] = value
    return settings


def get_model_config(name: str) -> ModelConfig:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}") from None
