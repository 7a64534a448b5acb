"""A per-layer summary of a model: output shape, parameters and multiply-adds.

This is the book's `layer_summary` (one row per layer for a (1, 1, 28, 28)
input) with the columns of Keras' `model.summary()` and a count of
multiply-adds, the arithmetic that dominates a forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..base.tables import format_table


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str  # the module's class name, as the book prints it
    output_shape: tuple[int, ...]
    params: int
    macs: int  # multiply-adds for this input


def _macs(layer: nn.Module, output: torch.Tensor) -> int:
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return output.numel() * (layer.in_channels // layer.groups) * kh * kw
    if isinstance(layer, nn.Linear):
        return output.numel() * layer.in_features
    return 0


@torch.no_grad()
def summarize(model: nn.Module,
              input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> list[LayerRow]:
    """Run a zero input through `model` layer by layer and describe each layer."""
    was_training = model.training
    model.eval()  # batch norm on a single example needs running statistics
    try:
        param = next(model.parameters())
        x = torch.zeros(input_shape, device=param.device, dtype=param.dtype)
        rows = []
        for name, layer in model.named_children():
            x = layer(x)
            params = sum(p.numel() for p in layer.parameters())
            kind = type(layer).__name__
            rows.append(LayerRow(name, kind, tuple(x.shape), params, _macs(layer, x)))
        return rows
    finally:
        model.train(was_training)


def format_summary(rows: list[LayerRow]) -> str:
    """The summary as an aligned text table with totals."""
    header = ("layer", "type", "output shape", "params", "mult-adds")
    body = [(r.name, r.kind, str(r.output_shape), f"{r.params:,}", f"{r.macs:,}") for r in rows]
    total = ("total", "", "", f"{sum(r.params for r in rows):,}", f"{sum(r.macs for r in rows):,}")
    return format_table(header, body, align="lllrr", footer=[total])
