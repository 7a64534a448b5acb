"""A picture of the network: one box per layer, data flowing from the input to the
outputs, each box with its type, settings and output shape (the book's LeNet
figure; Keras' `plot_model(show_shapes=True)`)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from torch import nn

from .summary import summarize

COLOURS = {"Conv2d": "#9ecae1", "Linear": "#a1d99b", "AvgPool2d": "#fdd0a2",
           "MaxPool2d": "#fdd0a2", "BatchNorm2d": "#dadaeb", "BatchNorm1d": "#dadaeb",
           "Flatten": "#e0e0e0", "Dropout": "#f0f0f0", "input": "#ffffff"}
ACTIVATION_COLOUR = "#fcbba1"


def describe(layer: nn.Module) -> str:
    if isinstance(layer, nn.Conv2d):
        k, p = layer.kernel_size, layer.padding
        return f"{layer.out_channels}@{k[0]}x{k[1]}" + (f", pad {p[0]}" if p[0] else "")
    if isinstance(layer, nn.AvgPool2d | nn.MaxPool2d):
        return f"{layer.kernel_size}x{layer.kernel_size}, stride {layer.stride}"
    if isinstance(layer, nn.Linear):
        return f"{layer.in_features} -> {layer.out_features}"
    if isinstance(layer, nn.Dropout):
        return f"p={layer.p}"
    return ""


def shape_text(shape: tuple[int, ...]) -> str:
    return " x ".join(str(s) for s in shape[1:])  # without the batch dimension


def plot_network(model: nn.Sequential, path: str | Path, input_shape: tuple[int, ...],
                 title: str = "") -> Path:
    rows = summarize(model, input_shape)
    layers = dict(model.named_children())
    boxes = [("input", "image", "", input_shape, 0)]
    boxes += [(r.kind, r.name, describe(layers[r.name]), r.output_shape, r.params) for r in rows]
    height = 0.62
    fig = Figure(figsize=(5.2, 0.5 + 0.78 * len(boxes)), dpi=120)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.3, len(boxes) * 0.78 + (0.6 if title else 0.1))
    ax.axis("off")
    if title:
        ax.text(5, len(boxes) * 0.78 + 0.25, title, ha="center", va="center", fontsize=11,
                weight="bold")
    for i, (kind, name, settings, shape, params) in enumerate(boxes):
        y = (len(boxes) - 1 - i) * 0.78
        colour = COLOURS.get(kind, ACTIVATION_COLOUR)
        ax.add_patch(FancyBboxPatch((1.0, y), 8.0, height, facecolor=colour,
                                    boxstyle="round,pad=0.02,rounding_size=0.1",
                                    edgecolor="#555555"))
        label = kind if kind == "input" else f"{kind}  ({name})"
        ax.text(1.25, y + height * 0.68, label, va="center", fontsize=9, weight="bold")
        detail = settings + (f"   {params:,} params" if params else "")
        ax.text(1.25, y + height * 0.28, detail, va="center", fontsize=8, color="#333333")
        ax.text(8.8, y + height / 2, shape_text(shape), va="center", ha="right", fontsize=9,
                family="monospace")
        if i:
            ax.add_patch(FancyArrowPatch((5, y + height + 0.16), (5, y + height),
                                         arrowstyle="-|>", mutation_scale=10, color="#555555"))
    fig.savefig(path, bbox_inches="tight")
    return Path(path)
