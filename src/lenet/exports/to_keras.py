"""`lenet export RUN --format keras`: the model as a Keras 3 `.keras` file, verified against
PyTorch. It takes images (B, H, W, C) float32 in [0, 1] and returns logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tensorflow import keras

from ..errors import LenetError
from ..models import LeNet
from .agreement import Agreement, compare
from .plan import Layer, plan

POOLS = {"avg": keras.layers.AveragePooling2D, "max": keras.layers.MaxPooling2D}


def keras_layer(layer: Layer) -> list[keras.layers.Layer]:
    """The Keras layers for one planned layer (weights set after the model is built)."""
    if layer.kind == "conv":
        kernel = layer.params["kernel"]  # (kh, kw, in, out)
        pad = [keras.layers.ZeroPadding2D(layer.size)] if layer.size else []
        return [*pad, keras.layers.Conv2D(kernel.shape[3], kernel.shape[:2], name=layer.name)]
    if layer.kind == "dense":
        return [keras.layers.Dense(layer.params["kernel"].shape[1], name=layer.name)]
    if layer.kind == "act":
        # keras' gelu defaults to the exact form, as PyTorch's GELU
        return [keras.layers.Activation(layer.option)]
    if layer.kind == "pool":
        return [POOLS[layer.option](pool_size=layer.size, strides=layer.size)]
    if layer.kind == "flatten":
        return [keras.layers.Flatten()]
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def build_keras(model: LeNet) -> keras.Sequential:
    """A Keras Sequential computing what `model` does, in NHWC, with its weights."""
    config = model.config
    layers = plan(model)
    net = keras.Sequential([keras.Input((*config.input_size, config.in_channels)),
                            *[k for layer in layers for k in keras_layer(layer)]],
                           name=f"lenet_{config.activation}_{config.pool}")
    for layer in layers:
        if layer.params:
            net.get_layer(layer.name).set_weights([layer.params["kernel"],
                                                   layer.params["bias"]])
    return net


def export_keras(model: LeNet, path: str | Path) -> Path:
    """Write `model` as a .keras file (Keras requires the suffix)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise LenetError(f"{path}: a Keras file must end in .keras")
    try:
        build_keras(model).save(path)
    except OSError as e:
        raise LenetError(f"cannot write {path}: {e.strerror or e}") from e
    return path


def verify_keras(path: Path, images: np.ndarray, torch_logits: np.ndarray,
                 labels: np.ndarray) -> Agreement:
    """Load the written file and compare its logits for (N, H, W, C) `images` with PyTorch's."""
    net = keras.models.load_model(path)
    logits = np.concatenate([np.asarray(net(images[i:i + 2048], training=False))
                             for i in range(0, len(images), 2048)])
    return compare(logits, torch_logits, labels)
