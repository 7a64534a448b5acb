"""LeNet-5's whole forward pass for one image in the native kernel, without PyTorch.

`WholeNetwork.of(blocks, rest)` takes a model's conv blocks as the kernel reads them
(lenet5.Blocks) and the layers after them, folds eval-mode batch norms into the
Linear layers and keeps its own copy of the weights; `logits_one(image)` is one C call
(`lenet5_logits`) from a uint8 image to its logits.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import torch
from torch import nn

from .lenet5 import (
    ACTIVATION_CODES,
    BN_GIVEN,
    BN_NONE,
    INPUT_SHAPE,
    POOL_CODES,
    Blocks,
    bn_buffer,
    library,
    required,
)


class WholeNetwork:
    """LeNet-5's whole forward pass for one uint8 image in the native kernel: the
    low-latency path of `lenet predict` (no framework call between image and logits).

    Built from a model's conv blocks as the kernel reads them (`Blocks`: activation,
    pool, with or without batch norm, in eval mode) and the layers after them: Flatten,
    then Linear layers with that same activation between them; a BatchNorm1d after a Linear is
    folded into it and Dropout is skipped, as both are in eval mode. Holds its own copy of
    the weights and statistics: a snapshot, as the Predictor's fast model is.
    """

    def __init__(self, lib: ctypes.CDLL, blocks: Blocks,
                 dense: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._lib = lib
        self._tensors = [t.detach().float().contiguous().clone() for t in blocks.tensors()[:4]]
        self._bn_mode = BN_GIVEN if blocks.bn1 is not None else BN_NONE
        bn1, bn2 = blocks.bn1, blocks.bn2  # both or neither
        self._bn = (bn_buffer(bn1, bn2, BN_GIVEN) if bn1 is not None and bn2 is not None
                    else torch.zeros(1))
        self._dense = [t.float().contiguous() for pair in dense for t in pair]
        sizes = [400, *(w.shape[0] for w, _ in dense)]
        self._sizes = (ctypes.c_int * len(sizes))(*sizes)
        self._weights = (ctypes.c_void_p * len(dense))(*(t.data_ptr() for t in self._dense[0::2]))
        self._biases = (ctypes.c_void_p * len(dense))(*(t.data_ptr() for t in self._dense[1::2]))
        self._n_dense = len(dense)
        self._scratch_floats = lib.lenet5_saved_floats(0) + 2 * max(sizes)
        self._classes = sizes[-1]
        self._buffers = threading.local()  # the kernel runs without the GIL: one set a thread
        self._codes = ACTIVATION_CODES[blocks.activation], POOL_CODES[blocks.pool], self._bn_mode
        self._conv = [t.data_ptr() for t in self._tensors]

    @classmethod
    def of(cls, blocks: Blocks, rest: list[nn.Module]) -> WholeNetwork | None:
        """For `blocks` followed by `rest` (Flatten, Linear, [BatchNorm1d], act, [Dropout],
        ..., Linear), or None when the layers are anything else or there is no kernel."""
        lib = library()
        if lib is None or not rest or type(rest[0]) is not nn.Flatten:
            return None
        act = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}[blocks.activation]
        dense = _dense_stack(rest[1:], act)
        if dense is None or dense[0][0].shape[1] != 400:
            return None
        return cls(lib, blocks, dense)

    def logits_one(self, image: np.ndarray) -> np.ndarray:
        """Logits of one uint8 (28, 28) image."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.shape != INPUT_SHAPE[1:]:
            raise ValueError(f"images must be {INPUT_SHAPE[1:]}, got {image.shape}")
        buffers = self._buffers
        if not hasattr(buffers, "scratch"):
            buffers.scratch = np.zeros(self._scratch_floats, np.float32)
        logits = np.empty(self._classes, np.float32)
        self._lib.lenet5_logits(1, image.ctypes.data, *self._conv, self._n_dense,
                                ctypes.addressof(self._sizes), ctypes.addressof(self._weights),
                                ctypes.addressof(self._biases), logits.ctypes.data,
                                buffers.scratch.ctypes.data, *self._codes, self._bn.data_ptr())
        return logits


@torch.no_grad()
def _dense_stack(layers: list[nn.Module],
                 act: type[nn.Module]) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(weight, bias) per Linear of `layers` as eval mode computes them (a following
    BatchNorm1d folded in, Dropout skipped), if they are Linear [BatchNorm1d] act [Dropout]
    repeated, then a last Linear; else None."""
    dense: list[tuple[torch.Tensor, torch.Tensor]] = []
    k = 0
    while k < len(layers):
        linear = layers[k]
        if type(linear) is not nn.Linear or linear.bias is None:
            return None
        if dense and dense[-1][0].shape[0] != linear.in_features:
            return None
        weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()
        k += 1
        norm = layers[k] if k < len(layers) else None
        if type(norm) is nn.BatchNorm1d:
            if not norm.track_running_stats or not norm.affine:
                return None
            scale = required(norm.weight) / torch.sqrt(required(norm.running_var) + norm.eps)
            weight, bias = (weight * scale[:, None],
                            (bias - required(norm.running_mean)) * scale + required(norm.bias))
            k += 1
        dense.append((weight, bias))
        if k == len(layers):
            return dense  # the last Linear: the logits
        if type(layers[k]) is not act:
            return None
        k += 1
        if k < len(layers) and type(layers[k]) is nn.Dropout:
            k += 1
    return None  # ended on an activation: no output layer
