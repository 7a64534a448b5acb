"""The book's training figure: train loss, train accuracy and test accuracy per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, *, eval_name: str = "test",
                title: str = "") -> Path:
    """Plot metric rows (one dict per epoch) as the book does, and save a PNG."""
    epochs = [row["epoch"] for row in history]
    # A bare Figure (no pyplot): never opens a window, never touches the user's backend.
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    ax.plot(epochs, [r["train_loss"] for r in history], "-", label="train loss")
    ax.plot(epochs, [r["train_acc"] for r in history], "m--", label="train acc")
    ax.plot(epochs, [r[f"{eval_name}_acc"] for r in history], "g-.", label=f"{eval_name} acc")
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
