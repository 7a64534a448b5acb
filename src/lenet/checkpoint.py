"""Checkpoints: everything needed to rebuild a model, or to resume its training exactly.

A checkpoint is a plain dict saved with `torch.save` and loaded with
`weights_only=True` (no pickled code). It holds the model's name and
configuration, its weights, the optimizer and scheduler states, how far
training got (completed epochs, steps into the next one, that epoch's running
sums), the metrics history and the RNG states. Writes are atomic: a crash while
saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .errors import LenetError
from .models import LeNet, ModelConfig

FORMAT = "lenet-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"


def capture_rng() -> dict[str, Any]:
    """The global RNG states that training consumes (dropout, on CPU and GPU)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write `payload` (a dict of plain values and tensors) to `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    return path


def resolve(path: str | Path) -> Path:
    """Accept a run directory or a checkpoint file."""
    path = Path(path)
    return path / FILENAME if path.is_dir() else path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (or the one in a run directory), checking that it is one."""
    path = resolve(path)
    if not path.is_file():
        raise LenetError(f"{path}: no checkpoint there")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for bad files
        raise LenetError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LenetError(f"{path}: not a lenet checkpoint")
    if payload.get("version", 0) > VERSION:
        raise LenetError(f"{path}: written by a newer lenet (format {payload['version']})")
    return payload


def model_from_payload(payload: dict[str, Any], device: str | torch.device = "cpu") -> LeNet:
    model = LeNet(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["model_state"])
    return model.to(device).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LeNet:
    """Rebuild a trained model from its checkpoint alone, in eval mode."""
    return model_from_payload(load(path, map_location=device), device)
