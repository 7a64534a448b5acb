"""The optimizers the recipes name: multi-tensor updates, the same numbers as PyTorch's
default per-tensor loop."""

from __future__ import annotations

import pytest
import torch

from lenet.training.config import TrainConfig
from lenet.training.optim import build_optimizer

SHAPES = [(120, 400), (120,), (6, 1, 5, 5), (16, 6, 5, 5), (10, 84), (10,)]


@pytest.mark.parametrize("settings", [
    {"optimizer": "sgd", "lr": 0.3},  # the book's
    {"optimizer": "sgd", "lr": 0.3, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    {"optimizer": "adam", "lr": 0.01, "weight_decay": 1e-4},
    {"optimizer": "adamw", "lr": 0.01, "weight_decay": 1e-2},
    {"optimizer": "rmsprop", "lr": 0.01, "momentum": 0.9},
])
def test_multi_tensor_update_is_bit_identical_to_the_loop(settings: dict) -> None:
    torch.manual_seed(0)
    ours = [torch.randn(s, requires_grad=True) for s in SHAPES]
    loop = [p.detach().clone().requires_grad_() for p in ours]
    config = TrainConfig(**settings)
    optimizer = build_optimizer(ours, config)
    assert optimizer.defaults["foreach"] is True
    defaults = {k: v for k, v in optimizer.defaults.items()
                if k != "decoupled_weight_decay" or type(optimizer) is torch.optim.Adam}
    reference = type(optimizer)(loop, **{**defaults, "foreach": False})
    for step in range(30):
        grads = [torch.randn(s) for s in SHAPES]
        for group in (optimizer.param_groups[0], reference.param_groups[0]):
            group["lr"] = settings["lr"] * (step + 1) / 30  # as a schedule moves it
        for params, opt in ((ours, optimizer), (loop, reference)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(ours, loop, strict=True):
        assert torch.equal(p, q)
