"""How good a trained model is, and where it errs: `lenet evaluate RUN`.

Loss and accuracy over a whole split, per-class precision, recall and F1, the
most confused class pairs, and the confusion matrix as a table and a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ..base.tables import format_table
from ..data.loader import tta_mean
from .predictor import Predictor


@dataclass
class Evaluation:
    split: str
    classes: list[str]
    loss: float
    accuracy: float
    confusion: np.ndarray  # (true class, predicted class) counts
    examples: int = field(init=False)

    def __post_init__(self) -> None:
        self.examples = int(self.confusion.sum())

    def per_class(self) -> list[dict[str, Any]]:
        """Precision, recall, F1 and support per class."""
        tp = np.diag(self.confusion).astype(float)
        predicted, actual = self.confusion.sum(axis=0), self.confusion.sum(axis=1)
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
        denominator = precision + recall
        f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(tp),
                       where=denominator > 0)
        return [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f),
                 "support": int(s)}
                for c, p, r, f, s in zip(self.classes, precision, recall, f1, actual, strict=True)]

    def confused_pairs(self, n: int = 5) -> list[tuple[str, str, int]]:
        """The `n` largest off-diagonal counts: (true class, predicted as, count)."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None)[:n]
        pairs = [(self.classes[i], self.classes[j], int(off[i, j]))
                 for i, j in zip(*np.unravel_index(order, off.shape), strict=True)]
        return [p for p in pairs if p[2] > 0]

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "examples": self.examples, "loss": self.loss,
                "accuracy": self.accuracy, "per_class": self.per_class(),
                "confused_pairs": [list(p) for p in self.confused_pairs()],
                "confusion": self.confusion.tolist(), "classes": self.classes}


def evaluate_split(predictor: Predictor, images: np.ndarray, labels: np.ndarray,
                   split: str = "test", tta: str | None = None) -> Evaluation:
    """`tta`: each image's logits averaged over the views of that test-time augmentation
    (lenet.data.loader.tta_views), as a run trained with `--tta` evaluated itself."""
    if tta is None:
        logits = predictor.logits(images)
    else:
        pixels = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
        logits = tta_mean(predictor.logits, pixels, tta)
    y = torch.as_tensor(labels.astype(np.int64))
    loss = float(F.cross_entropy(logits, y))
    predicted = logits.argmax(dim=1).numpy()
    k = len(predictor.classes)
    confusion = np.bincount(labels.astype(np.int64) * k + predicted, minlength=k * k)
    return Evaluation(split, predictor.classes, loss, float((predicted == labels).mean()),
                      confusion.reshape(k, k))


def format_report(ev: Evaluation) -> str:
    table = format_table(
        ("class", "precision", "recall", "f1", "support"),
        [(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
          f"{row['support']:,}") for row in ev.per_class()], rule=False)
    lines = [f"{ev.split} split: {ev.examples:,} examples, loss {ev.loss:.4f}, "
             f"accuracy {ev.accuracy:.4f}", "", table]
    lines += ["", "most confused (true -> predicted: count):"]
    lines += [f"  {t} -> {p}: {n}" for t, p, n in ev.confused_pairs()]
    return "\n".join(lines)


def plot_confusion(ev: Evaluation, path: str | Path, title: str = "") -> Path:
    """The confusion matrix with class names, counts in the cells and a colour bar."""
    k = len(ev.classes)
    fig = Figure(figsize=(1.0 + 0.75 * k, 0.6 + 0.65 * k), dpi=120)
    ax = fig.add_subplot()
    image = ax.imshow(ev.confusion, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="examples")
    ax.set_xticks(range(k), ev.classes, rotation=45, ha="right")
    ax.set_yticks(range(k), ev.classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"confusion matrix, {ev.split} split (accuracy {ev.accuracy:.3f})")
    high = ev.confusion.max() / 2
    for i in range(k):
        for j in range(k):
            count = ev.confusion[i, j]
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > high else "black")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
