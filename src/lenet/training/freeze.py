"""FreezeOut for LeNet: the first conv block stops learning after a share of the steps.

Brock et al. (2017, "FreezeOut") stop training a network's first layers early, which cuts
the backward pass where those layers' gradients are the costliest part. In LeNet-5 the
first block (conv1 and its batch norm) is cheap forward but not backward: its weights'
gradient and conv2's input gradient (needed only for it) are about 45% of the fused
kernel's backward pass, which skips both once nothing in the block needs a gradient
(lenet5.py); PyTorch's autograd skips them too. The `speed-90` record freezes it for the
last 40% of its steps at no cost on validation (sweeps/speed-90.toml).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import ConfigError
from ..models.network import LeNet


def check_processes(share: float | None, processes: int) -> None:
    """Refuse a freeze in a run of several processes: DDP's reducer expects a gradient for
    every parameter it was given."""
    if processes > 1 and (share or 1.0) < 1.0:
        raise ConfigError(f"--freeze-first-block trains in one process only (this run has "
                          f"{processes}: DDP needs a gradient for every parameter it was "
                          "given); --freeze-first-block 1 keeps the block training")


def first_block(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the first conv block (conv1, bn1) of every LeNet in `model`."""
    return [p for net in model.modules() if isinstance(net, LeNet)
            for layer in net.conv_blocks()[0].layers() for p in layer.parameters()]


def freeze(parameters: list[nn.Parameter]) -> None:
    """No more gradients, so no more updates (an optimizer skips a parameter without one)."""
    for p in parameters:
        p.requires_grad_(False)
        p.grad = None


def freeze_step(share: float, epochs: int, steps_per_epoch: int) -> int:
    """The global step (0-based, counting every epoch's) after which the block is frozen."""
    return round(share * epochs * steps_per_epoch)


def freezer(model: nn.Module, share: float | None, epochs: int, steps_per_epoch: int,
            epoch: int, done: int) -> Callable[[int], None] | None:
    """For an epoch about to run from its step `done`: freezes the block now if its step has
    passed, and returns the per-step callback (`train_one_epoch`'s `on_step`, given the steps
    done in the epoch) that freezes it when its step comes in this epoch; None if none."""
    if share is None:
        return None
    at, start = freeze_step(share, epochs, steps_per_epoch), epoch * steps_per_epoch
    parameters = first_block(model)
    if start + done >= at:
        if any(p.requires_grad for p in parameters):  # (resumed, or the first epoch after)
            freeze(parameters)
        return None
    if at >= start + steps_per_epoch:
        return None  # a later epoch's

    def on_step(steps: int) -> None:
        if start + steps == at:
            freeze(parameters)

    return on_step
