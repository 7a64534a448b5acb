"""Making a model train fast on its device without changing what it computes.

On the CPU, LeNet's step is bound by oneDNN's kernels for tiny feature maps,
not by arithmetic. What `prepare_model` does there, each measured on 2 cores:

- LeNet-5's two conv blocks (the book's shapes; sigmoid or ReLU; average or max
  pooling; with or without batch norm) run in one fused native kernel
  (lenet/native) when it builds cleanly and measured at least 10% faster than
  the layers here (native/guard.py): the same sums in another order (as close
  to a float64 reference as PyTorch's), about 2x faster per training step on
  AVX-512 (`lenet bench` measures it). It falls back to the layers one by one for
  anything else: other shapes, autocast, input gradients, forward hooks
  (activation capture), tracing or export;
- 2x2/stride-2 average pooling as a depthwise convolution with weights 1/4:
  the same sums (bit-identical weights after 4 epochs of LeNet-5), faster
  forward and backward than `avg_pool2d`, most of all on NHWC data;
- channels-last (NHWC) layout: LeNet-5 (sigmoid or ReLU, average pooling)
  trains ~1.3x faster with it, but max-pooling models ~1.15x slower and batch
  norm ~2x slower, so those keep NCHW.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.onnx import is_in_onnx_export  # imported once: the attribute path costs 10 us

from ..models import LeNet
from . import guard, lenet5


class AvgPool2d(nn.AvgPool2d):
    """`nn.AvgPool2d(2, 2)` computed as a depthwise convolution.

    It keeps the class name, repr and behaviour of the module it replaces, so
    summaries and printed models read the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H/2, W/2)
        k = 2
        weight = x.new_full((x.shape[1], 1, k, k), 1.0 / (k * k))
        return F.conv2d(x, weight, stride=k, groups=x.shape[1])

    @staticmethod
    def can_replace(pool: nn.Module) -> bool:
        # 2x2 only: weights of 1/4 are exact, so the sums are the same; that is measured.
        return (type(pool) is nn.AvgPool2d and pool.kernel_size in (2, (2, 2))
                and pool.stride in (2, (2, 2))
                and pool.padding in (0, (0, 0)) and not pool.ceil_mode
                and pool.divisor_override is None)


def _same_kind(a: nn.Module, b: nn.Module) -> bool:
    return type(a) is type(b) or (isinstance(a, nn.AvgPool2d) and isinstance(b, nn.AvgPool2d))


def fused_conv_blocks(layers: list[nn.Module]) -> tuple[str, str, bool] | None:
    """(activation, pool, batch_norm) if `layers` start with LeNet-5's two conv blocks as the
    native kernel computes them (conv [batch norm] activation pool, twice), else None."""
    batch_norm = len(layers) > 1 and type(layers[1]) is nn.BatchNorm2d
    size = 8 if batch_norm else 6
    if len(layers) < size:
        return None
    if batch_norm:
        conv1, bn1, act1, pool1, conv2, bn2, act2, pool2 = layers[:8]
    else:
        (conv1, act1, pool1, conv2, act2, pool2), bn1, bn2 = layers[:6], None, None

    def conv_ok(conv: nn.Module, c_in: int, c_out: int, padding: int) -> bool:
        return (type(conv) is nn.Conv2d and conv.in_channels == c_in
                and conv.out_channels == c_out and conv.kernel_size == (5, 5)
                and conv.stride == (1, 1) and conv.padding == (padding, padding)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is not None
                and conv.padding_mode == "zeros")

    def bn_ok(bn: nn.Module | None, channels: int) -> bool:
        return bn is None or (type(bn) is nn.BatchNorm2d and bn.num_features == channels
                              and bn.affine and bn.track_running_stats
                              and bn.momentum is not None)

    def pool_kind(pool: nn.Module) -> str | None:
        if isinstance(pool, nn.AvgPool2d):
            return "avg" if AvgPool2d.can_replace(pool) or type(pool) is AvgPool2d else None
        if type(pool) is nn.MaxPool2d and pool.kernel_size in (2, (2, 2)) \
                and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0)) \
                and pool.dilation in (1, (1, 1)) and not pool.ceil_mode \
                and not pool.return_indices:
            return "max"
        return None

    activation = {nn.Sigmoid: "sigmoid", nn.ReLU: "relu"}.get(type(act1))
    pool = pool_kind(pool1)
    if (activation is None or pool is None or type(act2) is not type(act1)
            or pool_kind(pool2) != pool or not _same_kind(pool1, pool2)
            or not (conv_ok(conv1, 1, 6, 2) and conv_ok(conv2, 6, 16, 0))
            or not (bn_ok(bn1, 6) and bn_ok(bn2, 16))
            or (batch_norm and bn1.eps != bn2.eps)):  # the kernel takes one eps
        return None
    return activation, pool, batch_norm


class FusedSequential(nn.Sequential):
    """An `nn.Sequential` whose first layers (LeNet-5's conv blocks) run in the fused native
    kernel whenever the input and the moment allow, else layer by layer."""

    fused: tuple[str, str, bool]  # (activation, pool, batch_norm), set by prepare_model

    def _head(self) -> list[nn.Module]:
        return list(self)[:8 if self.fused[2] else 6]

    @staticmethod
    def _kernel_tensors(head: list[nn.Module]) -> list[torch.Tensor]:
        """What the kernel reads: the convolutions' and batch norms' weights and statistics
        (looked up each time: `.to()` replaces buffers)."""
        convs = (head[0], head[4]) if len(head) == 8 else (head[0], head[3])
        tensors = [t for conv in convs for t in (conv.weight, conv.bias)]
        for norm in (head[1], head[5]) if len(head) == 8 else ():
            tensors += [norm.weight, norm.bias, norm.running_mean, norm.running_var]
        return tensors

    def _can_fuse(self, x: torch.Tensor) -> bool:
        """Whether this forward may run in the kernel (checked every call: 20-30 us)."""
        head = self._head()
        batch_norm = self.fused[2]
        if batch_norm and head[1].training != head[5].training:
            return False
        # With batch norm in eval mode the kernel has no backward (batch statistics only).
        frozen_norm_with_grad = (batch_norm and not head[1].training
                                 and torch.is_grad_enabled()
                                 and any(p.requires_grad for m in head for p in m.parameters()))
        return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
                and x.shape[0] > 0  # an empty batch has no batch statistics
                and tuple(x.shape[1:]) == lenet5.INPUT_SHAPE and not x.requires_grad
                and all(t.device.type == "cpu" and t.dtype == torch.float32
                        for t in self._kernel_tensors(head))
                and not frozen_norm_with_grad
                and not torch.is_autocast_enabled("cpu")
                and not any(m._forward_hooks or m._forward_pre_hooks for m in head)
                and not (nn.modules.module._global_forward_hooks
                         or nn.modules.module._global_forward_pre_hooks)
                and not (torch.jit.is_tracing() or torch.jit.is_scripting()
                         or is_in_onnx_export() or torch.compiler.is_compiling())
                and lenet5.available()
                and guard.allows(head, self.fused, x))  # measured faster here, or forced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._can_fuse(x):
            return super().forward(x)
        head = self._head()
        activation, pool, batch_norm = self.fused
        if batch_norm:
            x = lenet5.conv_blocks(x, head[0], head[4], activation, pool, head[1], head[5])
        else:
            x = lenet5.conv_blocks(x, head[0], head[3], activation, pool)
        for layer in list(self)[len(head):]:
            x = layer(x)
        return x


class FusedLeNet(FusedSequential, LeNet):
    """A `LeNet` with the fused forward (what prepare_model makes of LeNet-5 on the CPU)."""


FUSED_CLASSES: dict[type, type] = {nn.Sequential: FusedSequential, LeNet: FusedLeNet}


def _fuse(model: nn.Module) -> bool:
    """Give `model` (a LeNet or an nn.Sequential, or a model holding one as `net` like the
    book's classes) the fused forward if its layers allow; True if it has it."""
    seq = model if isinstance(model, nn.Sequential) else getattr(model, "net", None)
    if isinstance(seq, FusedSequential):
        return True
    if type(seq) not in FUSED_CLASSES or not lenet5.available():
        return False
    fused = fused_conv_blocks(list(seq))
    if fused is None:
        return False
    seq.__class__ = FUSED_CLASSES[type(seq)]  # same modules and parameters, faster forward
    seq.fused = fused
    return True


def native_network(model: nn.Module) -> lenet5.WholeNetwork | None:
    """The whole of a prepared LeNet-5 (conv blocks fused, then dense layers) as one native
    call for single images, or None where the model or the machine does not allow it."""
    seq = model if isinstance(model, nn.Sequential) else getattr(model, "net", None)
    if not isinstance(seq, FusedSequential):
        return None
    return lenet5.WholeNetwork.of(list(seq), *seq.fused)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move `model` to `device` and lay it out to train fastest there (in place)."""
    model.to(device)
    if device.type == "cpu":
        for parent in model.modules():
            for name, child in parent.named_children():
                if AvgPool2d.can_replace(child):
                    setattr(parent, name, AvgPool2d(2, 2))
        # The fused kernel reads NCHW copies of the weights; where it does not run (the
        # guard said PyTorch's layers are faster, hooks, ...) the layers run as unfused.
        _fuse(model)
        slow_in_nhwc = (nn.MaxPool2d, nn.modules.batchnorm._BatchNorm)
        if not any(isinstance(m, slow_in_nhwc) for m in model.modules()):
            model.to(memory_format=torch.channels_last)
    return model


def native_choice(model: nn.Module, batch_size: int, precision: str = "fp32") -> dict[str, Any]:
    """Which path trains `model`'s conv blocks at `batch_size`, and why (the guard decides
    now if it has not yet), with the kernel's state: for a run's record."""
    seq = model if isinstance(model, nn.Sequential) else getattr(model, "net", None)
    device = next(model.parameters()).device
    why = None
    if device.type != "cpu":  # (no kernel report: nothing is built for a GPU run)
        return {"path": "pytorch", "why": f"the kernel is for the CPU, this run is on "
                                          f"{device.type}"}
    if precision != "fp32":
        why = f"precision {precision}: autocast runs PyTorch's kernels"
    elif not lenet5.available():
        why = f"native kernel not used: {lenet5.why_not()}"
    elif not isinstance(seq, FusedSequential):
        why = "the model's first layers are not LeNet-5's conv blocks as the kernel has them"
    if why is not None:
        return {"path": "pytorch", "why": why, "kernel": lenet5.kernel_report()}
    decision = guard.decide(seq._head(), seq.fused, batch_size, backward=True)
    return {"path": "fused kernel" if decision.use_kernel else "pytorch", "why": decision.why,
            "fused_ms": decision.fused_ms, "torch_ms": decision.torch_ms,
            "kernel": lenet5.kernel_report()}
