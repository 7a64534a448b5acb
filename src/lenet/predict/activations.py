"""Looking inside: the feature maps of LeNet's first and second convolution.

`capture` runs inputs through a model and keeps the outputs of named layers
(forward hooks, removed afterwards; layer by layer, so a model prepared for the
fused kernel runs the hooked layers too). `plot_activations` draws, for each input,
the image with its true and predicted class, then every feature map of layer
1 and layer 2 (after the activation), each layer on one shared colour scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..errors import LenetError
from ..native.fastpath import layer_by_layer

LAYERS = ("act1", "act2")  # the activations after conv1 and conv2


def capture(model: nn.Module, x: torch.Tensor,
            names: Sequence[str] = LAYERS) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(model output, {layer name: its output}) for input `x`."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise LenetError(f"the model has no layer {', '.join(missing)}; "
                         f"its layers: {', '.join(n for n in modules if n)}")
    outputs: dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_hook(
        lambda _m, _i, out, n=n: outputs.__setitem__(n, out.detach())) for n in names]
    try:
        with layer_by_layer():
            result = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return result, outputs


def default_classes(classes: Sequence[str]) -> str:
    """The classes `lenet activations` shows unless told: the chapter's exercise compares
    sweaters and coats."""
    if "pullover" in classes and "coat" in classes:
        return "pullover,coat"
    return ",".join(classes[:2])


def match_class(name: str, classes: Sequence[str]) -> int:
    """The index of class `name` (case-insensitive; 'T-shirt' matches 'T-shirt/top')."""
    name = name.strip().lower()
    for i, c in enumerate(classes):
        if name in (c.lower(), c.lower().split("/")[0]):
            return i
    raise LenetError(f"unknown class {name!r}; classes: {', '.join(classes)}")


def pick_examples(images: np.ndarray, labels: np.ndarray, classes: Sequence[str], *,
                  index: Sequence[int] = (), wanted: str | None = None,
                  per_class: int = 4) -> tuple[list[np.ndarray], list[str]]:
    """Images of a split chosen by `index` and by class names ("pullover,coat": the first
    `per_class` of each), with captions naming their class and index."""
    chosen, captions = [], []
    for i in index:
        if i >= len(labels):
            raise LenetError(f"--index {i}: the test split has {len(labels)} images")
        chosen.append(images[i])
        captions.append(f"{classes[labels[i]]} (test #{i})")
    for label in (match_class(c, classes) for c in wanted.split(",")) if wanted else ():
        for i in np.flatnonzero(labels == label)[:per_class]:
            chosen.append(images[i])
            captions.append(f"{classes[label]} (test #{i})")
    return chosen, captions


def plot_activations(images: np.ndarray, captions: Sequence[str],
                     acts: dict[str, torch.Tensor], path: str | Path, title: str = "") -> Path:
    """One block per input: the input, layer-1 maps in a row, layer-2 maps in rows of 8."""
    a1, a2 = (acts[name].float().cpu().numpy() for name in LAYERS)
    n, c1, c2 = len(images), a1.shape[1], a2.shape[1]
    cols = max(8, c1)
    rows2 = -(-c2 // cols)
    rows_per = 1 + rows2
    fig = Figure(figsize=(1.3 * (cols + 1) + 0.8, 1.35 * rows_per * n + 0.6), dpi=100)
    grid = fig.add_gridspec(rows_per * n, cols + 2, width_ratios=[1.3] + [1] * cols + [0.12],
                            hspace=0.45, wspace=0.12)
    ranges = {name: (float(a.min()), float(a.max())) for name, a in zip(LAYERS, (a1, a2),
                                                                          strict=True)}
    shown = {}
    for i in range(n):
        top = i * rows_per
        ax = fig.add_subplot(grid[top:top + rows_per, 0])
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(captions[i], fontsize=8)
        ax.axis("off")
        for layer, maps, first_row in (("act1", a1, top), ("act2", a2, top + 1)):
            vmin, vmax = ranges[layer]
            for j in range(maps.shape[1]):
                ax = fig.add_subplot(grid[first_row + j // cols, 1 + j % cols])
                shown[layer] = ax.imshow(maps[i, j], cmap="magma", vmin=vmin, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"L{layer[-1]} {maps.shape[2]}x{maps.shape[3]}", fontsize=7)
    for k, layer in enumerate(LAYERS):
        cax = fig.add_subplot(grid[k * (rows_per * n) // 2:(k + 1) * (rows_per * n) // 2, -1])
        fig.colorbar(shown[layer], cax=cax)
        cax.set_ylabel(f"layer {layer[-1]} activation", fontsize=8)
    fig.suptitle(title or "activations after the first and second convolution", fontsize=11,
                 y=1 - 0.25 / fig.get_figheight())
    fig.subplots_adjust(top=1 - 0.55 / fig.get_figheight())
    fig.savefig(path, bbox_inches="tight")
    return Path(path)
