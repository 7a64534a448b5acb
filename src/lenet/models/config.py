"""A LeNet-family model's architecture as data: `ModelConfig`, its choices, the registry.

Torch-free, so the command line, sweeps and run records read and check a model's
configuration without importing torch; `network.py` builds the layers it describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from ..errors import ConfigError

# The choices a model offers; network.py maps each name to its layer class.
Activation = Literal["sigmoid", "relu", "tanh", "gelu", "silu"]
Pool = Literal["avg", "max"]
Init = Literal["xavier", "kaiming", "default"]
ACTIVATION_NAMES: tuple[Activation, ...] = get_args(Activation)
POOL_NAMES: tuple[Pool, ...] = get_args(Pool)
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
        if self.activation not in ACTIVATION_NAMES:
            raise ConfigError(f"unknown activation {self.activation!r}; "
                              f"choose from {', '.join(ACTIVATION_NAMES)}")
        if self.pool not in POOL_NAMES:
            raise ConfigError(f"unknown pool {self.pool!r}; choose from {', '.join(POOL_NAMES)}")
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
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items()}
        return cls(**values)


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


def get_model_config(name: str) -> ModelConfig:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}") from None
