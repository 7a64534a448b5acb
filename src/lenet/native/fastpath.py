"""Making a model train fast on its device without changing what it computes.

On the CPU, LeNet's step is bound by oneDNN's kernels for tiny feature maps,
not by arithmetic. What `prepare_model` does there, each measured on 2 cores:

- LeNet-5's two conv blocks (the book's shapes; sigmoid or ReLU; average or max
  pooling; with or without batch norm) run in one fused native kernel
  (lenet5.c) when it builds cleanly and measured at least 10% faster than the
  layers here (guard.py): the same sums in another order (as close to a float64
  reference as PyTorch's), about 2x faster per training step on AVX-512
  (`lenet bench` measures it). A `LeNet` finds its blocks by name
  (`LeNet.conv_blocks()`); `prepare_model` sets its `blocks_kernel` to a
  `KernelPath`, which each forward asks first. It falls back to the layers one
  by one for anything else: other shapes, autocast, input gradients, tracing or
  export, and inside `layer_by_layer()`;
- 2x2/stride-2 average pooling as a depthwise convolution with weights 1/4:
  the same sums (bit-identical weights after 4 epochs of LeNet-5), faster
  forward and backward than `avg_pool2d`, most of all on NHWC data;
- channels-last (NHWC) layout: LeNet-5 (sigmoid or ReLU, average pooling)
  trains ~1.3x faster with it, but max-pooling models ~1.15x slower and batch
  norm ~2x slower, so those keep NCHW.

Forward hooks: a fused call runs conv1 ... pool2 as one, so hooks on those layers
(a user's own `register_forward_hook`, or a global one) are not called by it; the
layers after the blocks run as modules and their hooks are. PyTorch has no public
way to ask whether a module has hooks, so the fast path does not guess: code that
hooks those layers runs its forward inside `layer_by_layer()`, as lenet's activation
capture does, or uses a model that `prepare_model` has not touched.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeGuard, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.onnx import is_in_onnx_export  # imported once: the attribute path costs 10 us

from ..errors import ConfigError
from ..models.network import ConvBlock, LeNet
from . import guard, layout, lenet5
from .network import WholeNetwork


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


def _conv_ok(conv: nn.Module, c_in: int, c_out: int, padding: int) -> TypeGuard[nn.Conv2d]:
    return (type(conv) is nn.Conv2d and conv.in_channels == c_in
            and conv.out_channels == c_out and conv.kernel_size == (5, 5)
            and conv.stride == (1, 1) and conv.padding == (padding, padding)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is not None
            and conv.padding_mode == "zeros")


def _norm_ok(bn: nn.Module | None, channels: int) -> TypeGuard[nn.BatchNorm2d | None]:
    return bn is None or (type(bn) is nn.BatchNorm2d and bn.num_features == channels
                          and bn.affine and bn.track_running_stats and bn.momentum is not None)


def _pool_kind(pool: nn.Module) -> str | None:
    if isinstance(pool, nn.AvgPool2d):
        return "avg" if AvgPool2d.can_replace(pool) or type(pool) is AvgPool2d else None
    if (type(pool) is nn.MaxPool2d and pool.kernel_size in (2, (2, 2))
            and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1)) and not pool.ceil_mode
            and not pool.return_indices):
        return "max"
    return None


def kernel_blocks(blocks: Sequence[ConvBlock]) -> lenet5.Blocks | None:
    """The first two of `blocks` as the kernel reads them, if they are LeNet-5's conv blocks
    as it computes them (conv [batch norm] activation pool, twice), else None."""
    if len(blocks) < 2:
        return None
    one, two = blocks[:2]
    activation = {nn.Sigmoid: "sigmoid", nn.ReLU: "relu"}.get(type(one.act))
    pool = _pool_kind(one.pool)
    same_pools = type(one.pool) is type(two.pool) or all(
        isinstance(b.pool, nn.AvgPool2d) for b in (one, two))
    if (activation is None or pool is None or type(two.act) is not type(one.act)
            or _pool_kind(two.pool) != pool or not same_pools
            or not (_conv_ok(one.conv, 1, 6, 2) and _conv_ok(two.conv, 6, 16, 0))
            or (one.norm is None) != (two.norm is None)
            or not (_norm_ok(one.norm, 6) and _norm_ok(two.norm, 16))
            or (one.norm is not None and two.norm is not None  # (both or neither: above)
                and one.norm.eps != two.norm.eps)):  # the kernel: one eps
        return None
    return lenet5.Blocks(one.conv, two.conv, activation, pool, one.norm, two.norm,
                         tuple(one.layers() + two.layers()))


_local = threading.local()  # per thread: how many layer_by_layer() blocks are open


@contextmanager
def layer_by_layer() -> Iterator[None]:
    """Inside this block (in this thread) prepared models run every layer as a module, so
    forward hooks on the layers inside the fused conv blocks are called."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


class KernelPath:
    """The fused kernel as a model's `blocks_kernel`: `path(x)` is the first two conv blocks'
    output (B, 16, 5, 5), or None where this call has to run layer by layer."""

    blocks = 2  # conv blocks it computes (LeNet.forward continues after `pool2`)

    def __init__(self, kernel: lenet5.Blocks, bf16: bool = False) -> None:
        self.kernel = kernel
        # bfloat16 products where allowed and the kernel has them (lenet5.bf16_dot)
        self.bf16 = bf16 and lenet5.bf16_dot()

    def can_run(self, x: torch.Tensor) -> bool:
        """Whether this forward may run in the kernel (checked every call, in the order that
        rules most calls out soonest: 10-20 us)."""
        if (not x.is_cpu or x.dtype is not torch.float32 or x.dim() != 4
                or x.shape[0] == 0  # an empty batch has no batch statistics
                or tuple(x.shape[1:]) != lenet5.INPUT_SHAPE or x.requires_grad
                or getattr(_local, "depth", 0) > 0 or torch.is_autocast_enabled("cpu")
                or torch.jit.is_tracing() or torch.jit.is_scripting() or is_in_onnx_export()
                or torch.compiler.is_compiling() or not lenet5.available()):
            return False
        k = self.kernel
        tensors = k.tensors()
        if not all(t.is_cpu and t.dtype is torch.float32 for t in tensors):
            return False
        bn1, bn2 = k.bn1, k.bn2  # both or neither
        if bn1 is not None and bn2 is not None and bn1.training != bn2.training:
            return False
        backward = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        # With batch norm in eval mode the kernel has no backward (batch statistics only).
        if backward and bn1 is not None and not bn1.training:
            return False
        return guard.decide(k, x.shape[0], backward).use_kernel  # measured faster, or forced

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        # bfloat16 products in training steps only: evaluation and inference multiply in
        # float32, so a run's test accuracy is what `lenet evaluate` and `serve` compute
        return self.kernel(x, self.bf16 and torch.is_grad_enabled()) if self.can_run(x) else None

    @classmethod
    def of(cls, blocks: Sequence[ConvBlock], bf16: bool = False) -> KernelPath | None:
        """The fused path for `blocks` (their first two), or None where the kernel does not
        compute them or is not available here; `bf16` allows it bfloat16 products."""
        kernel = kernel_blocks(blocks)
        return cls(kernel, bf16) if kernel is not None and lenet5.available() else None

    def products(self) -> str:
        """How its convolutions multiply, for a run's record."""
        return ("training steps: bfloat16 (AVX512-BF16), summed in float32; evaluation: "
                "float32" if self.bf16 else "float32")


FP32_PRECISIONS = ("ieee", "tf32", "bf16")  # PyTorch's names; tf32 is a GPU's (float32 here)


def torch_conv_precision() -> str:
    """What PyTorch allows float32 convolutions on the CPU (its oneDNN backend): "ieee"
    (float32 products), "tf32" or "bf16" (`torch.backends.mkldnn.conv.fp32_precision`, which
    inherits from `torch.backends.mkldnn`, then `torch.backends`, where it is "none")."""
    mkldnn = torch.backends.mkldnn
    for level in (getattr(mkldnn, "conv", None), mkldnn, torch.backends):  # (untyped: conv)
        value = str(getattr(level, "fp32_precision", "none"))
        if value != "none":
            return value
    return "ieee"


def _lenets(model: nn.Module) -> list[LeNet]:
    return [m for m in model.modules() if isinstance(m, LeNet)]


def kernel_path(model: nn.Module) -> KernelPath | None:
    """The fused path `prepare_model` gave `model` (a LeNet, or the first LeNet inside it)."""
    found = [m.blocks_kernel for m in _lenets(model) if isinstance(m.blocks_kernel, KernelPath)]
    return found[0] if found else None


def evaluation_batch(model: nn.Module, device: torch.device) -> int:
    """Images one evaluation call should compute for `model` as `prepare_model` left it: on a
    CPU, PyTorch's convolutions on maps of 16-64 channels run 2-3x faster in chunks of 256
    than of 1,024 (the maps leave the cache; benchmarks/eval_batches.py), while the fused
    kernel keeps each image's maps in L1 and gains from fewer, bigger calls; so do GPUs."""
    return 256 if device.type == "cpu" and kernel_path(model) is None else 1024


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def prepare_model(model: ModuleT, device: torch.device, batch_size: int | None = None,
                  conv_precision: str | None = None) -> ModuleT:
    """Move `model` to `device` and lay it out to train fastest there (in place): every LeNet
    in it gets the fused kernel as its `blocks_kernel` where its conv blocks allow. Given the
    training `batch_size`, a LeNet the kernel does not fuse goes channels-last where the
    layout guard measures that faster (layout.py). `conv_precision` "bf16" lets the kernel
    multiply in bfloat16 where the CPU has AVX512-BF16 (sums stay float32), as PyTorch's
    own setting of that name lets oneDNN; None: PyTorch's setting (`torch_conv_precision`)."""
    precision = conv_precision or torch_conv_precision()
    if precision not in FP32_PRECISIONS:
        raise ConfigError(f"unknown convolution precision {precision!r}; choose from "
                          f"{', '.join(FP32_PRECISIONS)}")
    model.to(device)
    if device.type == "cpu":
        for parent in model.modules():
            for name, child in parent.named_children():
                if AvgPool2d.can_replace(child):
                    setattr(parent, name, AvgPool2d(2, 2))
    for net in _lenets(model):  # (after the pools: the path holds the layers it reads)
        net.blocks_kernel = (KernelPath.of(net.conv_blocks(), bf16=precision == "bf16")
                             if device.type == "cpu" else None)
    if device.type == "cpu":
        slow_in_nhwc = (nn.MaxPool2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
                        nn.SyncBatchNorm)
        if not any(isinstance(m, slow_in_nhwc) for m in model.modules()) or (
                batch_size is not None and _measured_faster_in_nhwc(model, batch_size)):
            # torch's overloads of Module.to omit the memory_format its docs give
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def _measured_faster_in_nhwc(model: nn.Module, batch_size: int) -> bool:
    """For a lone LeNet without the fused kernel: the layout guard's decision."""
    if not isinstance(model, LeNet) or model.blocks_kernel is not None:
        return False  # the kernel's LeNet-5 shapes: measured slower in NHWC (above)
    config = model.config
    return layout.decide(model, (config.in_channels, *config.input_size), batch_size).use_kernel


def native_network(model: nn.Module, stop_before: str | None = None) -> WholeNetwork | None:
    """The whole of a prepared LeNet-5 (conv blocks fused, then dense layers) as one native
    call for single images, or None where the model or the machine does not allow it; with
    `stop_before`, the network cut before the layer of that name (after the conv blocks)."""
    path = model.blocks_kernel if isinstance(model, LeNet) else None
    if not isinstance(path, KernelPath):
        return None
    after = list(model.named_children())
    after = after[[name for name, _ in after].index(f"pool{path.blocks}") + 1:]
    if stop_before is not None:
        names = [name for name, _ in after]
        if stop_before not in names:
            return None
        after = after[:names.index(stop_before)]
    return WholeNetwork.of(path.kernel, [layer for _, layer in after])


def native_choice(model: nn.Module, batch_size: int, precision: str = "fp32") -> dict[str, Any]:
    """Which path trains `model`'s conv blocks at `batch_size`, and why (the guard decides
    now if it has not yet), with the kernel's state: for a run's record."""
    device = next(model.parameters()).device
    why = None
    if device.type != "cpu":  # (no kernel report: nothing is built for a GPU run)
        return {"path": "pytorch", "why": f"the kernel is for the CPU, this run is on "
                                          f"{device.type}"}
    path = kernel_path(model)
    if precision != "fp32":
        why = f"precision {precision}: autocast runs PyTorch's kernels"
    elif not lenet5.available():
        why = f"native kernel not used: {lenet5.why_not()}"
    elif path is None:
        why = "the model's first layers are not LeNet-5's conv blocks as the kernel has them"
    if why is not None:
        return {"path": "pytorch", "why": why, **_layout_of(model, batch_size),
                "kernel": guard.kernel_report()}
    assert path is not None  # `why` says why there is none
    decision = guard.decide(path.kernel, batch_size, backward=True)
    return {"path": "fused kernel" if decision.use_kernel else "pytorch", "why": decision.why,
            "fused_ms": decision.fused_ms, "torch_ms": decision.torch_ms,
            **({"products": path.products()} if decision.use_kernel else {}),
            **({} if decision.use_kernel else _layout_of(model, batch_size)),
            "kernel": guard.kernel_report()}


def _layout_of(model: nn.Module, batch_size: int) -> dict[str, str]:
    """The memory format PyTorch's layers train in (the numbers differ between the two in
    their last bits), and the layout guard's reason where this process has its decision."""
    nhwc = any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
               and not p.is_contiguous() for p in model.parameters())
    found = {"layout": "channels-last" if nhwc else "contiguous"}
    if isinstance(model, LeNet):
        config = model.config
        known = layout.known(model, (config.in_channels, *config.input_size), batch_size)
        if known is not None:
            found["layout_why"] = known.why
    return found
