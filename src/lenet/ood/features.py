"""Penultimate features: the input of a LeNet's last Linear layer (`output`), with the logits.

Feature-space detectors (Mahalanobis, k-NN) need them, for batches and for
single images at the latency of the logits alone:

- batches go through the Predictor's fast PyTorch model, the features caught
  by a forward pre-hook on `output` (the fused conv kernel still runs: `output`
  is called as a module after it);
- on the native backend one image goes through lenet's compiled kernel with the
  dense stack cut before the last activation: the kernel applies the
  activation after every Linear but the last, so it returns the penultimate
  layer's pre-activation; the activation and the last Linear (84 -> 10) are
  done here in numpy, so lenet5.c needs no second entry point;
- on the onnxruntime/hybrid backends one image goes through an ONNX graph with
  a second output, `features`;
- else through PyTorch with the hook.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import LenetError
from ..models.network import LeNet
from ..native.fastpath import native_network
from ..native.network import WholeNetwork
from ..predict.predictor import ONNX_INPUT, ONNX_OUTPUT, Predictor, onnx_session

FEATURES_OUTPUT = "features"
LAST_LAYER = "output"  # models.LeNet names its last Linear so


def last_linear(model: nn.Module) -> nn.Linear:
    layer = dict(model.named_modules()).get(LAST_LAYER)
    if not isinstance(layer, nn.Linear):
        raise LenetError(f"the model has no Linear layer named {LAST_LAYER!r}: "
                         "feature-space OOD detectors need LeNet's layer names")
    return layer


class _WithFeatures(nn.Module):
    """(logits, penultimate features) of a LeNet, for the ONNX export."""

    def __init__(self, model: nn.Sequential) -> None:
        super().__init__()
        self.body = nn.Sequential(*list(model)[:-1])
        self.head = list(model)[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.head(features), features


def _native_penultimate(model: nn.Module) -> WholeNetwork | None:
    """The native whole-network call cut just before the last hidden activation, or None."""
    names = [name for name, _ in model.named_children()]
    # The last activation before `output` (fc{n}_act); what follows it (dropout, output)
    # is identity in eval mode or done in numpy.
    acts = [name for name in names if name.startswith("fc") and name.endswith("_act")]
    if not acts or names[-1] != LAST_LAYER:
        return None  # no hidden dense layer: the kernel cannot stop at the flattened maps
    return native_network(model, stop_before=acts[-1])


class FeatureExtractor:
    """(features (N, D), logits (N, classes)) for a Predictor's model, batch or single image."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        fast = predictor._fast
        self._head = last_linear(fast)
        self.dim = self._head.in_features
        self._native = None
        self._session: Any = None
        self._act: str | None = None
        if predictor.backend == "native":
            self._native = _native_penultimate(fast)
            self._act = predictor.model.config.activation
            weight, bias = self._head.weight.detach(), self._head.bias.detach()
            self._w = weight.float().numpy().T.copy()  # (D, classes): one (D,) @ (D, C) a call
            self._b = bias.float().numpy().copy()
        elif predictor.single_session is not None:
            self._session = onnx_session(_onnx_with_features(predictor.model,
                                                             predictor.input_size))

    @torch.inference_mode()
    def batch(self, images: Any, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features and logits of a batch (uint8 (N, H, W) or float (N, 1, H, W)), computed
        `batch_size` images at a time [the predictor's]."""
        p = self.predictor
        batch_size = batch_size or p.batch_size
        x = p.as_batch(images)
        caught: list[torch.Tensor] = []
        hook = self._head.register_forward_pre_hook(
            lambda _m, inputs: caught.append(inputs[0].float().cpu()))
        try:
            with p._autocast:
                logits = [p._fast(x[i:i + batch_size]).float().cpu()
                          for i in range(0, len(x), batch_size)]
        finally:
            hook.remove()
        if not logits:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, len(p.classes)), np.float32)
        return torch.cat(caught).numpy(), torch.cat(logits).numpy()

    def one(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features (D,) and logits (classes,) of one uint8 (H, W) image: the low-latency path."""
        if self._native is not None:
            h = self._native.logits_one(image)  # the penultimate layer's pre-activation
            features = np.maximum(h, 0) if self._act == "relu" else 1 / (1 + np.exp(-h))
            return features, features @ self._w + self._b
        if self._session is not None:
            x = np.asarray(image, np.float32)[None, None] * np.float32(1 / 255)
            logits, features = self._session.run([ONNX_OUTPUT, FEATURES_OUTPUT], {ONNX_INPUT: x})
            return features[0], logits[0]
        features, logits = self.batch(np.asarray(image)[None])  # (batch is in inference mode)
        return features[0], logits[0]


def _onnx_with_features(model: LeNet, input_size: tuple[int, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    example = torch.zeros(1, model.config.in_channels, *input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        # torch's annotation omits the file-like objects its docs accept
        torch.onnx.export(_WithFeatures(model.cpu().eval()), (example,),
                          buffer,  # type: ignore[arg-type]
                          input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT, FEATURES_OUTPUT],
                          opset_version=17, dynamo=False,
                          dynamic_axes={ONNX_INPUT: {0: "batch"}})
    return buffer.getvalue()
