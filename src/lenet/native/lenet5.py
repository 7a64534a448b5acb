"""LeNet-5's two convolution blocks as one fused CPU kernel, with autograd.

`conv_blocks(x, conv1, conv2, activation, pool)` (or `Blocks(...)(x)`) computes
pool(act(conv2(pool(act(conv1(x)))))) for the book's shapes (1x28x28 input,
6@5x5 pad 2, 16@5x5, 2x2/2 pools) in lenet5.c and returns (B, 16, 5, 5); its
backward gives the gradients of both convolutions' weights and biases (not of
the input). The batch is split into one chunk per PyTorch thread, run in
parallel on PyTorch's own OpenMP workers (see lenet5.c); each chunk's weight
gradients land in their own row, summed here in a fixed order, so results do
not depend on timing (they do on the thread count, as PyTorch's own do).
"""

from __future__ import annotations

import ctypes
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from . import build

ACTIVATION_CODES = {"sigmoid": 0, "relu": 1}
POOL_CODES = {"avg": 0, "max": 1}
INPUT_SHAPE = (1, 28, 28)
OUTPUT_SHAPE = (16, 5, 5)
# conv1 weight, conv1 bias, conv2 weight, conv2 bias; then the batch norms' gamma1, beta1,
# gamma2, beta2 (zero without batch norm)
GRAD_SIZES = (150, 6, 2400, 16, 6, 6, 16, 16)
GRAD_FLOATS = sum(GRAD_SIZES)
BN_NONE, BN_BATCH, BN_GIVEN = 0, 1, 2  # no batch norm; batch statistics; running statistics
MIN_CHUNK = 8  # images per parallel chunk at least: smaller batches use fewer threads
ABI_VERSION = 9

_float_p = ctypes.c_void_p


_origin: dict[str, build.Build | str | None] = {}  # the library's Build, or why there is none


@cache
def library() -> ctypes.CDLL | None:
    lib = build.load("lenet5")
    _origin["state"] = build.last_build("lenet5")
    if lib is None:
        return None
    lib.lenet5_abi_version.restype = ctypes.c_int
    if lib.lenet5_abi_version() != ABI_VERSION:
        _origin["state"] = (f"its ABI version is {lib.lenet5_abi_version()}, lenet5.py expects "
                            f"{ABI_VERSION} (bump ABI_VERSION in both files together)")
        warnings.warn(f"lenet: native lenet5 kernel not used, PyTorch's layers run instead: "
                      f"{_origin['state']}", RuntimeWarning, stacklevel=2)
        return None
    lib.lenet5_saved_floats.restype = ctypes.c_int
    lib.lenet5_saved_floats.argtypes = [ctypes.c_int]
    lib.lenet5_scratch_floats.restype = ctypes.c_int
    lib.lenet5_parallel.restype = ctypes.c_int
    lib.lenet5_max_parts.restype = ctypes.c_int
    ints = [ctypes.c_int, ctypes.c_int]
    lib.lenet5_forward.restype = None
    lib.lenet5_forward.argtypes = [*ints, *[_float_p] * 7, *[ctypes.c_int] * 4, _float_p,
                                   ctypes.c_int]
    lib.lenet5_backward.restype = None
    lib.lenet5_backward.argtypes = [*ints, *[_float_p] * 5, *[ctypes.c_int] * 3, _float_p,
                                    _float_p, ctypes.c_int, ctypes.c_int]
    lib.lenet5_bf16_dot.restype = ctypes.c_int
    lib.lenet5_logits.restype = None
    lib.lenet5_logits.argtypes = [ctypes.c_int, *[_float_p] * 5, ctypes.c_int, *[_float_p] * 5,
                                  *[ctypes.c_int] * 3, _float_p]
    if hasattr(lib, "lenet5_vector_width"):
        lib.lenet5_vector_width.restype = ctypes.c_int
    return lib


def available() -> bool:
    return library() is not None


def build_state() -> build.Build | str | None:
    """The build this process loaded the library from or tried (with its logs), or why
    there is none."""
    library()
    return _origin.get("state")


def built() -> build.Build | None:
    """The build this process loaded the library from, or tried (its `path` is None)."""
    state = build_state()
    return state if isinstance(state, build.Build) else None


def why_not() -> str | None:
    """Why the kernel is not available (None when it is), in one line."""
    if library() is not None:
        return None
    state = build_state()
    if isinstance(state, build.Build):
        return "it did not build cleanly: " + state.failure_summary()
    return state or "not loaded"


def vector_width() -> int | None:
    """Floats per vector in the loaded kernel: the library's answer where it gives one, else
    what the target's feature macros imply; None without a kernel."""
    lib = library()
    if lib is None:
        return None
    if hasattr(lib, "lenet5_vector_width"):
        return int(lib.lenet5_vector_width())
    origin = built()
    return origin.toolchain.vector_width() if origin else None


def describe() -> str:
    """One line for reports: which kernel LeNet-5's conv blocks run on the CPU, and how."""
    lib = library()
    if lib is None:
        return f"PyTorch's (native kernel not used: {why_not()})"
    origin = built()
    assert origin is not None  # the library loaded, so it was built
    chain = origin.toolchain
    guard = {"on": "always (LENET_NATIVE=1)", "auto": "where the guard measured it faster",
             "off": "loaded, but turned off (LENET_NATIVE=0)"}
    return (f"native fused, {guard[build.mode()]} ({chain.version_line}, "
            f"-march={chain.march or '(default)'}, {vector_width()} floats a vector, "
            + ("OpenMP" if lib.lenet5_parallel() else "one thread")
            + (", bfloat16 products for --conv-precision bf16" if bf16_dot()
               else ", float32 products only: no AVX512-BF16") + ")")


def bf16_dot() -> bool:
    """Whether the loaded kernel can multiply in bfloat16 (built for a CPU with AVX512-BF16):
    `conv_blocks(..., bf16=True)` then rounds the convolutions' operands to bfloat16 and sums
    their products in float32, 32 of them an instruction instead of 16."""
    return available() and _sizes().bf16_dot


@dataclass(frozen=True)
class _Sizes:
    """What the library says of itself, asked once (each ctypes call costs a microsecond or
    more, and a training step would ask several times)."""

    parallel: bool
    max_parts: int
    saved: tuple[int, int]  # floats an image keeps for the backward pass: without, with BN
    scratch: int  # floats an image of the backward pass with batch statistics needs
    bf16_dot: bool  # bfloat16 products built in (AVX512-BF16)


@cache
def _sizes() -> _Sizes:
    lib = library()
    assert lib is not None  # asked only where the kernel runs
    return _Sizes(bool(lib.lenet5_parallel()), lib.lenet5_max_parts(),
                  (lib.lenet5_saved_floats(0), lib.lenet5_saved_floats(1)),
                  lib.lenet5_scratch_floats(), bool(lib.lenet5_bf16_dot()))


def _parts(n: int) -> int:
    """Parallel chunks for n images: PyTorch's thread count, at least MIN_CHUNK images each,
    at most what the kernel's per-chunk buffers hold."""
    sizes = _sizes()
    if not sizes.parallel:
        return 1
    return max(1, min(torch.get_num_threads(), n // MIN_CHUNK, sizes.max_parts))


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def bn_buffer(bn1: nn.BatchNorm2d, bn2: nn.BatchNorm2d, mode: int) -> torch.Tensor:
    """The kernel's batch norm block: gamma1 beta1 gamma2 beta2 mean1 var1 mean2 var2 eps
    (the statistics are the running ones for BN_GIVEN, filled in by the kernel for
    BN_BATCH)."""
    parts = [required(bn1.weight), required(bn1.bias), required(bn2.weight), required(bn2.bias)]
    if mode == BN_GIVEN:
        parts += [required(bn1.running_mean), required(bn1.running_var),
                  required(bn2.running_mean), required(bn2.running_var)]
    else:
        parts.append(parts[0].new_zeros(44))
    with torch.no_grad():  # (one call: a training step makes it every time)
        return torch.cat([*parts, parts[0].new_full((1,), bn1.eps)]).float()


def required(tensor: torch.Tensor | None) -> torch.Tensor:
    """A batch norm's affine parameter or running statistic: torch types them optional,
    lenet's layers (affine, tracking running statistics) always have them."""
    assert tensor is not None
    return tensor


class _ConvBlocks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, gamma1, beta1, gamma2, beta2, bn, activation, pool,
                bn_mode, bf16):
        lib = library()
        assert lib is not None  # the blocks run on the kernel only where it loaded
        ctx.w1_stride = w1.stride()  # channels-last or not: conv1's gradient is laid out alike
        x, w1, b1, w2, b2 = (t.contiguous() for t in (x, w1, b1, w2, b2))
        n = x.shape[0]
        parts = _parts(n)
        save = any(ctx.needs_input_grad[1:9])
        out = x.new_empty((n, *OUTPUT_SHAPE))
        per_image = _sizes().saved[int(bn_mode == BN_BATCH)]
        saved = x.new_empty(((n if save or bn_mode == BN_BATCH else parts), per_image))
        bn = bn if bn is not None else x.new_zeros(1)
        codes = ACTIVATION_CODES[activation], POOL_CODES[pool], bn_mode
        lib.lenet5_forward(n, parts, _ptr(x), _ptr(w1), _ptr(b1), _ptr(w2), _ptr(b2), _ptr(out),
                           _ptr(saved), int(save), *codes, _ptr(bn), int(bf16))
        if save:
            ctx.save_for_backward(x, w2, saved, bn)
            ctx.codes, ctx.bf16 = codes, bf16
        stats = bn[44:88].clone()  # the batch's means and variances, for the running ones
        ctx.mark_non_differentiable(stats)
        return out, stats

    @staticmethod
    def backward(ctx, grad_out, _grad_stats):
        lib = library()
        assert lib is not None  # the forward pass ran on it
        x, w2, saved, bn = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        n = x.shape[0]
        parts = _parts(n)
        grads = x.new_empty((parts, GRAD_FLOATS))
        scratch = x.new_empty((n, _sizes().scratch) if ctx.codes[2] == BN_BATCH else 1)
        # the first block's parameters (conv1, bn1) frozen: nothing below conv2 to compute
        first = any(ctx.needs_input_grad[i] for i in (1, 2, 5, 6))
        lib.lenet5_backward(n, parts, _ptr(x), _ptr(w2), _ptr(saved), _ptr(grad_out),
                            _ptr(grads), *ctx.codes, _ptr(bn), _ptr(scratch), int(ctx.bf16),
                            int(first))
        total = grads[0] if parts == 1 else grads.sum(0)
        gw1, gb1, gw2, gb2, gg1, gbe1, gg2, gbe2 = total.split(GRAD_SIZES)
        bn_grads = (gg1, gbe1, gg2, gbe2) if ctx.codes[2] == BN_BATCH else (None,) * 4
        if not first:  # (autograd drops them anyway; None says there are none)
            gw1 = gb1 = None
            bn_grads = (None, None, *bn_grads[2:])
        # (6, 1, 5, 5): with one input channel, the contiguous and the channels-last
        # strides address the same floats, so the parameter's own strides cost no copy
        # (and DDP's reducer, which compares them, has nothing to warn about).
        if gw1 is not None:
            gw1 = gw1.view(6, 1, 5, 5).as_strided((6, 1, 5, 5), ctx.w1_stride)
        return (None, gw1, gb1, gw2.view(16, 6, 5, 5), gb2, *bn_grads,
                None, None, None, None, None)


@dataclass(frozen=True)
class Blocks:
    """LeNet-5's two conv blocks as the kernel reads them: the model's own layers by role,
    `layers` all of them in order (what PyTorch runs instead)."""

    conv1: nn.Conv2d
    conv2: nn.Conv2d
    activation: str  # a key of ACTIVATION_CODES
    pool: str  # a key of POOL_CODES
    bn1: nn.BatchNorm2d | None
    bn2: nn.BatchNorm2d | None
    layers: tuple[nn.Module, ...]

    @property
    def kind(self) -> tuple[str, str, bool]:
        """(activation, pool, batch norm): what the guard's settings name."""
        return self.activation, self.pool, self.bn1 is not None

    def tensors(self) -> list[torch.Tensor]:
        """What the kernel reads (looked up each time: `.to()` replaces buffers)."""
        found = [self.conv1.weight, required(self.conv1.bias), self.conv2.weight,
                 required(self.conv2.bias)]
        for bn in (self.bn1, self.bn2) if self.bn1 is not None else ():
            assert bn is not None  # bn1 and bn2 come together
            found += [required(bn.weight), required(bn.bias), required(bn.running_mean),
                      required(bn.running_var)]
        return found

    def __call__(self, x: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B, 16, 5, 5); `bf16` as `conv_blocks` has it."""
        return conv_blocks(x, self.conv1, self.conv2, self.activation, self.pool, self.bn1,
                           self.bn2, bf16=bf16)


def conv_blocks(x: torch.Tensor, conv1: nn.Conv2d, conv2: nn.Conv2d, activation: str,
                pool: str, bn1: nn.BatchNorm2d | None = None,
                bn2: nn.BatchNorm2d | None = None, *, bf16: bool = False) -> torch.Tensor:
    """(B, 1, 28, 28) float32 CPU -> (B, 16, 5, 5): LeNet-5's two conv blocks, fused, with a
    batch norm after each convolution if given (batch statistics in training mode, the
    running ones otherwise; the running ones are updated as PyTorch does). `bf16`: the
    convolutions multiply bfloat16 roundings of their operands, forward and backward, and
    sum in float32, where the kernel has the instructions (`bf16_dot()`; else float32)."""
    bf16 = bf16 and bf16_dot()
    if bn1 is None:
        out, _ = _ConvBlocks.apply(x, conv1.weight, conv1.bias, conv2.weight, conv2.bias,
                                   None, None, None, None, None, activation, pool, BN_NONE,
                                   bf16)
        return out
    assert bn2 is not None  # bn1 and bn2 come together
    mode = BN_BATCH if bn1.training else BN_GIVEN
    out, stats = _ConvBlocks.apply(x, conv1.weight, conv1.bias, conv2.weight, conv2.bias,
                                   bn1.weight, bn1.bias, bn2.weight, bn2.bias,
                                   bn_buffer(bn1, bn2, mode), activation, pool, mode, bf16)
    if mode == BN_BATCH:
        _update_running_stats((bn1, bn2), stats.split((6, 6, 16, 16)),
                              (x.shape[0] * 784, x.shape[0] * 100))
    return out


@torch.no_grad()
def _update_running_stats(norms: tuple[nn.BatchNorm2d, nn.BatchNorm2d],
                          stats: Sequence[torch.Tensor], counts: tuple[int, int]) -> None:
    """As nn.BatchNorm2d does in training, for both norms (stats: mean1, var1, mean2, var2
    of the batch): momentum average, unbiased variance, one more batch tracked."""
    for norm, mean, var, count in zip(norms, stats[0::2], stats[1::2], counts, strict=True):
        momentum = norm.momentum
        assert momentum is not None  # fastpath._norm_ok: a number, not a cumulative mean
        required(norm.num_batches_tracked).add_(1)
        required(norm.running_mean).mul_(1 - momentum).add_(mean, alpha=momentum)
        required(norm.running_var).mul_(1 - momentum).add_(var * (count / max(count - 1, 1)),
                                                         alpha=momentum)
