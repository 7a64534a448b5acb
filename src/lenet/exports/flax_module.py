"""A LeNet exported by lenet, in Flax: `module, variables = load("model.safetensors")`.

lenet writes this file, unchanged, beside the parameters it exports
(`lenet export RUN --format flax`); it needs jax, flax and safetensors, not
lenet. The model takes images (B, H, W, C) float32 in [0, 1] and returns logits
(B, classes): `module.apply(variables, images)`. The architecture is read from
the file's metadata; batch norm is already folded into the weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
from flax import linen as nn
from safetensors.numpy import load_file, safe_open

ACTIVATIONS = {"sigmoid": nn.sigmoid, "relu": nn.relu, "tanh": nn.tanh, "silu": nn.silu,
               "gelu": lambda x: nn.gelu(x, approximate=False)}  # PyTorch's GELU: exact
POOLS = {"avg": nn.avg_pool, "max": nn.max_pool}


class LeNet(nn.Module):
    """Conv blocks (conv -> activation -> pool), flatten, dense layers, as lenet builds them."""

    channels: Sequence[int]
    kernel_sizes: Sequence[int]
    paddings: Sequence[int]
    dense: Sequence[int]
    num_classes: int
    activation: str = "sigmoid"
    pool: str = "avg"
    pool_size: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # (B, H, W, C) -> (B, classes)
        act, pool = ACTIVATIONS[self.activation], POOLS[self.pool]
        window = (self.pool_size, self.pool_size)
        for i, (c, k, p) in enumerate(zip(self.channels, self.kernel_sizes, self.paddings,
                                          strict=True), start=1):
            x = nn.Conv(c, (k, k), padding=((p, p), (p, p)), name=f"conv{i}")(x)
            x = pool(act(x), window, strides=window)
        x = x.reshape((x.shape[0], -1))  # (B, H * W * C)
        for j, width in enumerate(self.dense, start=1):
            x = act(nn.Dense(width, name=f"fc{j}")(x))
        return nn.Dense(self.num_classes, name="output")(x)


def load(path: str | Path) -> tuple[LeNet, dict[str, Any]]:
    """The module and its variables ({'params': ...}) from a .safetensors file lenet wrote."""
    with safe_open(str(path), framework="numpy") as f:
        config = json.loads(f.metadata()["config"])
    module = LeNet(**{k: config[k] for k in ("channels", "kernel_sizes", "paddings", "dense",
                                             "num_classes", "activation", "pool", "pool_size")})
    params: dict[str, dict[str, Any]] = {}
    for key, value in load_file(str(path)).items():  # "conv1.kernel" -> params["conv1"]["kernel"]
        layer, name = key.split(".")
        params.setdefault(layer, {})[name] = value
    return module, {"params": params}


def classes(path: str | Path) -> list[str]:
    """The class names stored with the parameters."""
    with safe_open(str(path), framework="numpy") as f:
        return json.loads(f.metadata()["config"])["classes"]
