"""A trained model ready to answer: `lenet.load(run_dir)` returns a `Predictor`.

Inputs are images as the datasets store them: uint8 (N, 28, 28) or
(28, 28), or float tensors (N, 1, 28, 28) already in [0, 1]. Engines that run
the same network:

- "native": LeNet-5 (sigmoid or ReLU, average or max pooling, with or without
  batch norm or dropout) on the CPU: one
  image goes through lenet's compiled kernel end to end (about 2x lower latency
  than ONNX Runtime), batches through PyTorch with the fused conv kernel;
- "torch": PyTorch alone (eval mode, `inference_mode`, nothing rebuilt per call;
  batches still use the fused conv kernel where the model has it);
- "onnxruntime": the model exported in memory once;
- "hybrid": single images through ONNX Runtime, batches through PyTorch.

`backend="auto"` picks native where it can run, else hybrid on a CPU with ONNX
Runtime installed, else torch; `lenet bench` measures all of them.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..base.device import available_cpus, pick_device
from ..errors import ConfigError
from ..models.network import LeNet
from ..native.fastpath import evaluation_batch, native_network, prepare_model
from ..training import checkpoint
from .choices import BACKENDS

ONNX_INPUT, ONNX_OUTPUT = "images", "logits"


@dataclass(frozen=True)
class Prediction:
    """One image's answer: its most likely class, the top k, and how familiar it looks."""

    index: int  # the predicted class's index
    label: str  # its name
    probability: float  # its softmax probability
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    top_indices: tuple[int, ...]  # the same classes' indices
    probabilities: np.ndarray  # (classes,)
    score: float  # in-distribution score, higher = more familiar (max softmax probability
    #               unless an out-of-distribution detector gave it)
    detector: str = "msp"  # the score's name
    threshold: float | None = None  # the detector's threshold; None: no OOD check was made
    out_of_distribution: bool | None = None  # score below threshold; None: not checked


def onnx_bytes(model: LeNet, input_size: tuple[int, int]) -> bytes:
    """The model as ONNX (dynamic batch; input 'images', output 'logits')."""
    buffer = io.BytesIO()
    example = torch.zeros(2, model.config.in_channels, *input_size)
    exported = copy.deepcopy(model).cpu().eval()  # the caller's model stays as it is
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        # torch's annotation omits the file-like objects its docs accept
        torch.onnx.export(exported, (example,), buffer,  # type: ignore[arg-type]
                          input_names=[ONNX_INPUT],
                          output_names=[ONNX_OUTPUT], opset_version=17, dynamo=False,
                          dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}})
    return buffer.getvalue()


def onnx_session(model_bytes_or_path: bytes | str | Path, threads: int | None = None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("ONNX Runtime is not installed: pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or available_cpus()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = model_bytes_or_path if isinstance(model_bytes_or_path, bytes) else str(
        model_bytes_or_path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def single_image(images: Any) -> np.ndarray | None:
    """The (H, W) uint8 image when `images` is one such image ((H, W) or (1, H, W)), else
    None: one image can take the single-image path (native where it runs)."""
    pixels = np.asarray(images)
    if pixels.dtype == np.uint8 and (pixels.ndim == 2 or (pixels.ndim == 3 and len(pixels) == 1)):
        return pixels.reshape(pixels.shape[-2:])
    return None


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class Predictor:
    """`model` stays as built (hooks, export); PyTorch inference runs a copy laid out for
    speed (lenet.native.fastpath). `precision="bf16"` runs PyTorch's bfloat16 kernels (PyTorch
    only; for LeNet-5 on the CPU about 2x fewer images/s than fp32 with the fused kernel,
    but faster for models the kernel does not cover on CPUs with AMX)."""

    def __init__(self, model: LeNet, classes: list[str], device: torch.device | str = "cpu",
                 *, backend: str = "auto", precision: str = "fp32",
                 source: Path | None = None) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"unknown precision {precision!r}; choose fp32 or bf16")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._fast = prepare_model(copy.deepcopy(self.model), self.device).eval()
        can_run_native = self.device.type == "cpu" and precision == "fp32"
        self._native = native_network(self._fast) if can_run_native else None
        self.batch_size = evaluation_batch(self._fast, self.device)  # images a call computes
        if backend == "auto":
            backend = ("native" if self._native is not None
                       else "hybrid" if can_run_native and onnxruntime_available() else "torch")
        if backend in ("onnxruntime", "hybrid", "native") and precision != "fp32":
            raise ConfigError(f"the {backend} backend runs fp32 only")
        if backend == "native" and self._native is None:
            raise ConfigError("the native backend runs LeNet-5 (sigmoid or ReLU, average or max "
                              "pooling, 28x28, batch norm and dropout allowed) on the CPU "
                              "with lenet's compiled kernel; this model, device or machine "
                              "cannot: use torch")
        self.backend, self.precision = backend, precision
        self.classes = list(classes)
        self.source = source
        height, width = model.config.input_size  # a list when read from JSON
        self.input_size = (height, width)
        session = (onnx_session(onnx_bytes(model, self.input_size))
                   if backend in ("onnxruntime", "hybrid") else None)
        self.session = session if backend == "onnxruntime" else None  # for batches
        self.single_session = session  # for logits_one
        self._autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                        enabled=precision == "bf16")
        # One preallocated single-image buffer: (1, C, H, W) float32.
        self._one = np.zeros((1, model.config.in_channels, *self.input_size), np.float32)
        self._one_tensor = torch.from_numpy(self._one)

    @classmethod
    def from_run(cls, run: str | Path, device: str = "auto", backend: str = "auto",
                 precision: str = "fp32") -> Predictor:
        target = pick_device(device)
        payload = checkpoint.load(run, map_location="cpu")
        model = checkpoint.model_from_payload(payload, "cpu")
        return cls(model, payload["classes"], target, backend=backend, precision=precision,
                   source=checkpoint.resolve(run))

    def as_batch(self, images: Any) -> torch.Tensor:
        """(N, 1, H, W) float32 in [0, 1] on the device, from uint8 or float input."""
        if isinstance(images, np.ndarray) and not images.flags.writeable:
            images = images.copy()  # torch wants writable memory
        x = torch.as_tensor(images)
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        if x.ndim == 2:
            x = x[None, None]
        elif x.ndim == 3:
            x = x[:, None]
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"images must be {self.input_size}, got {tuple(x.shape[-2:])}")
        return x.to(self.device, torch.float32)

    @torch.inference_mode()
    def logits(self, images: Any, batch_size: int | None = None) -> torch.Tensor:
        """Logits (N, classes) on the CPU, `batch_size` images at a time [self.batch_size]."""
        x = self.as_batch(images)
        batch_size = batch_size or self.batch_size
        if self.session is not None:
            array = x.cpu().numpy()
            run = self.session.run
            outs = [torch.from_numpy(run([ONNX_OUTPUT], {ONNX_INPUT: array[i:i + batch_size]})[0])
                    for i in range(0, len(array), batch_size)]
        else:
            with self._autocast:
                outs = [self._fast(x[i:i + batch_size]).float().cpu()
                        for i in range(0, len(x), batch_size)]
        return torch.cat(outs) if outs else torch.empty(0, len(self.classes))

    def logits_of(self, images: Any) -> torch.Tensor:
        """Logits (N, classes) of any `images`; one uint8 image by the low-latency path."""
        one = single_image(images)
        if one is None:
            return self.logits(images)
        return torch.from_numpy(np.asarray(self.logits_one(one)))[None]

    @torch.inference_mode()
    def logits_one(self, image: np.ndarray) -> np.ndarray:
        """Logits (classes,) of one uint8 (H, W) image: the low-latency path."""
        if self.backend == "native":
            assert self._native is not None  # the constructor refuses "native" without it
            return self._native.logits_one(image)
        np.multiply(image, np.float32(1 / 255), out=self._one[0, 0], casting="unsafe")
        logits: np.ndarray
        if self.single_session is not None:
            logits = self.single_session.run([ONNX_OUTPUT], {ONNX_INPUT: self._one})[0][0]
            return logits
        with self._autocast:  # one image: the plain layout has less overhead than NHWC
            logits = self.model(self._one_tensor.to(self.device))[0].float().cpu().numpy()
            return logits

    def probabilities(self, images: Any) -> torch.Tensor:
        return F.softmax(self.logits(images), dim=1)

    def predict(self, images: Any, top_k: int = 3) -> list[Prediction]:
        return self.predictions(self.logits(images), top_k)

    def predictions(self, logits: torch.Tensor, top_k: int = 3,
                    verdicts: Sequence[Any] | None = None) -> list[Prediction]:
        """Top-k classes per row of `logits` (already computed); with `verdicts` (one
        out-of-distribution check per row: detector, score, threshold, out_of_distribution)
        their scores instead of the max softmax probability."""
        probs = F.softmax(logits, dim=1).numpy()
        k = min(top_k, len(self.classes))
        # One sort for all rows (row by row it cost ~10 us an image: lenet serve's batches).
        orders = np.argsort(-probs, axis=1)[:, :k]
        tops = np.take_along_axis(probs, orders, axis=1).tolist()
        name = self.classes.__getitem__  # map/zip in C: a listcomp per row cost ~2 us a class
        rows = zip(orders.tolist(), tops, probs, strict=True)
        if verdicts is None:
            return [Prediction(order[0], name(order[0]), top[0],
                               list(zip(map(name, order), top, strict=True)), tuple(order), p,
                               top[0])
                    for order, top, p in rows]
        return [Prediction(order[0], name(order[0]), top[0],
                           list(zip(map(name, order), top, strict=True)), tuple(order), p,
                           v.score, v.detector, v.threshold, v.out_of_distribution)
                for (order, top, p), v in zip(rows, verdicts, strict=True)]


def load(run: str | Path, device: str = "auto", backend: str = "auto",
         precision: str = "fp32") -> Predictor:
    """A predictor for the model of a run directory (or checkpoint file)."""
    return Predictor.from_run(run, device, backend, precision)
