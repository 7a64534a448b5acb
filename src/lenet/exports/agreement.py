"""How closely an exported model agrees with PyTorch on the same images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    examples: int
    agreement: float  # fraction of identical predicted classes
    max_abs_error: float  # largest |logit difference|
    exported_accuracy: float
    torch_accuracy: float


def compare(exported: np.ndarray, torch_logits: np.ndarray, labels: np.ndarray) -> Agreement:
    """Compare (N, classes) logits of an export with PyTorch's for the same N images."""
    if exported.shape != torch_logits.shape:
        raise ValueError(f"logits of shape {exported.shape} vs PyTorch's {torch_logits.shape}")
    ours, theirs = exported.argmax(1), torch_logits.argmax(1)
    return Agreement(len(labels), float((ours == theirs).mean()),
                     float(np.abs(exported - torch_logits).max()),
                     float((ours == labels).mean()), float((theirs == labels).mean()))
