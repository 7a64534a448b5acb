"""A trained model ready to answer: `lenet.load(run_dir)` returns a `Predictor`.

Inputs are images as the datasets store them: uint8 (N, 28, 28) or
(28, 28), or float tensors (N, 1, 28, 28) already in [0, 1]. The model runs
in eval mode under `torch.inference_mode`, with no per-call rebuilding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint
from .device import pick_device
from .models import LeNet


@dataclass(frozen=True)
class Prediction:
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    probabilities: np.ndarray  # (classes,)
    score: float  # max softmax probability: low means unlike the training data

    @property
    def label(self) -> str:
        return self.top[0][0]


class Predictor:
    def __init__(self, model: LeNet, classes: list[str], device: torch.device,
                 source: Path | None = None) -> None:
        self.model = model.to(device).eval()
        self.classes = list(classes)
        self.device = device
        self.source = source
        self.input_size = tuple(model.config.input_size)

    @classmethod
    def from_run(cls, run: str | Path, device: str = "auto") -> Predictor:
        target = pick_device(device)
        payload = checkpoint.load(run, map_location="cpu")
        model = checkpoint.model_from_payload(payload, "cpu")
        return cls(model, payload["classes"], target, checkpoint.resolve(run))

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
    def logits(self, images: Any, batch_size: int = 4096) -> torch.Tensor:
        """Logits (N, classes) on the CPU."""
        x = self.as_batch(images)
        outs = [self.model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return torch.cat(outs).float().cpu() if outs else torch.empty(0, len(self.classes))

    def probabilities(self, images: Any) -> torch.Tensor:
        return F.softmax(self.logits(images), dim=1)

    def predict(self, images: Any, top_k: int = 3) -> list[Prediction]:
        probs = self.probabilities(images).numpy()
        k = min(top_k, len(self.classes))
        results = []
        for p in probs:
            order = np.argsort(-p)[:k]
            results.append(Prediction([(self.classes[i], float(p[i])) for i in order], p,
                                      float(p.max())))
        return results


def load(run: str | Path, device: str = "auto") -> Predictor:
    """A predictor for the model of a run directory (or checkpoint file)."""
    return Predictor.from_run(run, device)
