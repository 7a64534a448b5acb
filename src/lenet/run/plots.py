"""The book's training figure: train loss, train accuracy and test accuracy per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path, *, eval_name: str = "test",
                title: str = "") -> Path:
    """Plot metric rows (one dict per epoch) as the book does, and save a PNG."""
    from matplotlib.figure import Figure  # imported when needed: it costs start-up time

    epochs = [row["epoch"] for row in history]
    # A bare Figure (no pyplot): never opens a window, never touches the user's backend.
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    ax.plot(epochs, [r["train_loss"] for r in history], "-", label="train loss")
    ax.plot(epochs, [r["train_acc"] for r in history], "m--", label="train acc")
    evaluated = [r for r in history if f"{eval_name}_acc" in r]  # --eval-every skips some
    ax.plot([r["epoch"] for r in evaluated], [r[f"{eval_name}_acc"] for r in evaluated], "g-.",
            marker="." if len(evaluated) < len(history) else None, label=f"{eval_name} acc")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / accuracy")
    ax.set_xlim(0, max(epochs, default=1) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_samples(images: Sequence[Any] | np.ndarray, labels: Sequence[str], path: str | Path, *,
                 ncols: int = 9, title: str = "") -> Path:
    """A grid of images with their labels (the book's `show_images`)."""
    from matplotlib.figure import Figure

    n = len(images)
    nrows = max(1, -(-n // ncols))
    ncols = min(ncols, max(n, 1))
    fig = Figure(figsize=(1.5 * ncols, 1.85 * nrows + (0.4 if title else 0)), dpi=110)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, label in zip(axes, images, labels, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
