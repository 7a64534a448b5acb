"""Checkpoints: everything needed to rebuild a model, or to resume its training exactly.

A checkpoint is a plain dict saved with `torch.save` and loaded with
`weights_only=True` (no pickled code). It holds the model's name and
configuration, its weights, the optimizer and scheduler states, how far
training got (completed epochs, steps into the next one, that epoch's running
sums), the metrics history and the RNG states. Writes are atomic: a crash while
saving leaves the previous checkpoint intact.

Integrity: every checkpoint carries the SHA-256 of its content (`digest`: every
tensor's dtype, shape and bytes, every other value), checked on load, so a
truncated or bit-flipped file is refused with a message naming it. The last
two good checkpoints are kept (`checkpoint.pt`, `checkpoint.prev.pt`), and
`load_latest` falls back to the previous one when the newest is refused.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypedDict, cast

import torch

from ..base.atomic import write_bytes
from ..errors import LenetError
from ..models.config import ModelConfig
from ..models.network import LeNet
from .loop import HistoryRow

FORMAT = "lenet-checkpoint"
VERSION = 2  # 2: with a checksum; version 1 files (none) still load
FILENAME = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"  # the good checkpoint before the newest
CHECKSUM: Final = "sha256"


class Payload(TypedDict, total=False):
    """What a checkpoint holds (`save` adds format, version and sha256)."""

    format: str
    version: int
    sha256: str
    model_name: str  # the registered variant it started from
    model_config: dict[str, Any]  # ModelConfig.to_dict(): rebuilds the network alone
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    scaler_state: dict[str, Any] | None  # fp16's loss scaler
    train_config: dict[str, Any]  # TrainConfig.to_dict()
    epoch: int  # epochs completed
    partial: dict[str, Any] | None  # steps into the next epoch and its running sums
    history: list[HistoryRow]
    classes: list[str]
    dataset: str
    rng: dict[str, Any]  # capture_rng()


class CorruptCheckpoint(LenetError):
    """A checkpoint file that cannot be read, or whose content fails its checksum."""


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


def digest(payload: Any) -> str:
    """SHA-256 of a checkpoint's content, its checksum entry aside: tensors by dtype, shape
    and bytes, dicts by sorted keys, other values by their repr."""
    h = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{value.dtype}{tuple(value.shape)}:".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            keys = sorted((k for k in value if value is not payload or k != CHECKSUM), key=repr)
            h.update(f"D{len(keys)}:".encode())
            for key in keys:
                h.update(repr(key).encode())
                walk(value[key])
        elif isinstance(value, list | tuple):
            h.update(f"L{len(value)}:".encode())
            for item in value:
                walk(item)
        else:
            h.update(f"V{value!r};".encode())

    walk(payload)
    return h.hexdigest()


def previous(path: str | Path) -> Path:
    """Where the good checkpoint before `path`'s is kept."""
    path = Path(path)
    return path.with_name(PREVIOUS) if path.name == FILENAME else path.with_suffix(".prev.pt")


def save(path: str | Path, payload: Payload) -> Path:
    """Atomically write `payload` (a dict of plain values and tensors) to `path`, with its
    checksum; the file it replaces becomes `previous(path)` if it is a good one."""
    path = Path(path)
    content: Payload = {"format": FORMAT, "version": VERSION, **payload}
    content[CHECKSUM] = digest(content)
    buffer = io.BytesIO()  # whole in memory first: a full disk is then an OSError of ours
    torch.save(content, buffer)
    keep = previous(path) if _is_good(path) else None  # never a bad file over a good one
    write_bytes(path, buffer.getvalue(), keep_previous=keep)
    return path


def _is_good(path: Path) -> bool:
    try:
        load(path)
    except LenetError:
        return False
    return True


def resolve(path: str | Path) -> Path:
    """Accept a run directory or a checkpoint file."""
    path = Path(path)
    return path / FILENAME if path.is_dir() else path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Payload:
    """Load a checkpoint (or the one in a run directory), checking that it is one."""
    path = resolve(path)
    if not path.is_file():
        raise LenetError(f"{path}: no checkpoint there")
    try:
        # weights_only: tensors and plain values, never pickled code from someone else's file
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for bad files
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint, truncated or corrupt "
                                f"({type(e).__name__}: {_first_line(e)})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LenetError(f"{path}: not a lenet checkpoint")
    version = payload.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise LenetError(f"{path}: written by a newer lenet (format {version!r})")
    # Version 1 files have no checksum; any file that has one is checked.
    if (version >= 2 or CHECKSUM in payload) and payload.get(CHECKSUM) != digest(payload):
        raise CorruptCheckpoint(f"{path}: corrupt checkpoint: its content does not match its "
                                "checksum")
    for key, kind in (("model_config", dict), ("model_state", dict)):
        if not isinstance(payload.get(key), kind):
            raise LenetError(f"{path}: not a lenet checkpoint (no {key})")
    return cast(Payload, payload)


def load_latest(path: str | Path, note: Callable[[str], None],
                map_location: str | torch.device = "cpu") -> tuple[Path, Payload]:
    """(file, content) of the newest good checkpoint of a run: `path`'s, or, when that one is
    refused as corrupt, the previous one (saying so through `note`)."""
    path = resolve(path)
    try:
        return path, load(path, map_location)
    except CorruptCheckpoint as e:
        older = previous(path)
        if not older.is_file():
            raise
        try:
            payload = load(older, map_location)
        except LenetError as e2:
            raise CorruptCheckpoint(f"{e}; the previous one is refused too: {e2}") from e
        note(f"{e}; using the previous good checkpoint {older} (after epoch "
             f"{payload.get('epoch')})")
        return older, payload


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def model_from_payload(payload: Payload, device: str | torch.device = "cpu") -> LeNet:
    config = ModelConfig.from_dict(payload["model_config"])
    model = LeNet(config)
    try:
        model.load_state_dict(payload["model_state"])
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        raise LenetError(f"the checkpoint's weights do not fit its model {config} "
                         f"({_first_line(e)})") from e
    return model.to(device).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LeNet:
    """Rebuild a trained model from its checkpoint alone, in eval mode."""
    return model_from_payload(load(path, map_location=device), device)
