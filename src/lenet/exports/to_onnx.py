"""ONNX export, verified: `lenet export RUN --onnx FILE`.

The model is exported with a dynamic batch dimension, then the whole test split
is run through both ONNX Runtime and PyTorch, and their predictions and logits
compared, so a file is only reported good when it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LenetError
from ..predict.predictor import ONNX_INPUT, ONNX_OUTPUT, Predictor, onnx_bytes, onnx_session
from .agreement import Agreement, compare


def export_onnx(predictor: Predictor, path: str | Path) -> Path:
    """Write the model as ONNX with inputs (batch, 1, H, W) float32 in [0, 1]."""
    path = Path(path)
    data = onnx_bytes(predictor.model, predictor.input_size)
    try:
        path.write_bytes(data)
    except OSError as e:
        raise LenetError(f"cannot write {path}: {e.strerror or e}") from e
    return path


def verify(path: str | Path, predictor: Predictor, images: np.ndarray,
           labels: np.ndarray) -> Agreement:
    """Run `images` through ONNX Runtime and PyTorch (`predictor` must run PyTorch)."""
    if predictor.backend != "torch":
        raise ValueError("verify() compares with PyTorch: give it a torch-backed Predictor")
    session = onnx_session(path)
    x = predictor.as_batch(images).cpu().numpy()
    onnx_logits = np.concatenate([session.run([ONNX_OUTPUT], {ONNX_INPUT: x[i:i + 2048]})[0]
                                  for i in range(0, len(x), 2048)])
    return compare(onnx_logits, predictor.logits(images).numpy(), labels)
