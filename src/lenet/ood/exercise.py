"""The chapter's last exercise: what a trained LeNet does with inputs unlike its data.

`lenet ood RUN` answers it with numbers: per group (test images, noise, blank
images, real photos) the mean confidence, the predicted classes, layer-1 and
layer-2 activation statistics, and the share the run's OOD detector flags
(lenet.ood.runs). `score` gives the two logit scores (higher = more familiar):
the maximum softmax probability (`msp`) and the negative free energy
(`energy`, logsumexp of the logits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..base.tables import format_table
from ..data.images import PreparedImage, prepare_image
from ..errors import LenetError
from ..predict.activations import capture
from ..predict.predictor import Predictor

SCORES = ("msp", "energy")
PHOTOS = {  # scikit-image's bundled photos: name -> loader attribute
    "cat (chelsea)": "chelsea", "rocket": "rocket", "coffee": "coffee",
    "astronaut": "astronaut", "cameraman": "camera", "coins": "coins",
}


def score(logits: torch.Tensor, kind: str = "msp") -> np.ndarray:
    if kind == "msp":
        return torch.softmax(logits, dim=1).max(dim=1).values.numpy()
    if kind == "energy":
        return torch.logsumexp(logits, dim=1).numpy()
    raise LenetError(f"unknown OOD score {kind!r}; choose from {', '.join(SCORES)}")


def prepared_photos(size: tuple[int, int] = (28, 28)) -> dict[str, PreparedImage]:
    """scikit-image's bundled photos, prepared like user images, each with its original's
    statistics for the photo check (needs scikit-image)."""
    try:
        from skimage import data
    except ImportError:
        raise LenetError("real photos need scikit-image: pip install scikit-image") from None
    from PIL import Image

    return {name: prepare_image(Image.fromarray(getattr(data, attr)()), size=size)
            for name, attr in PHOTOS.items()}


def photos(size: tuple[int, int] = (28, 28)) -> dict[str, np.ndarray]:
    """scikit-image's bundled photos, prepared like user images (needs scikit-image)."""
    return {name: p.pixels for name, p in prepared_photos(size).items()}


def photo_originals(size: tuple[int, int] = (28, 28)) -> dict[str, list[np.ndarray | None]]:
    """Per photo group of `probe_groups`, its original's statistics (the photo check's)."""
    return {f"photo: {k}": [p.original] for k, p in prepared_photos(size).items()}


def probe_groups(test_images: np.ndarray, *, n: int = 500, seed: int = 0,
                 with_photos: bool = True) -> dict[str, np.ndarray]:
    """Named groups of uint8 (N, H, W) inputs: test images, noise, blanks, photos."""
    rng = np.random.default_rng(seed)
    shape = test_images.shape[1:]
    picks = rng.choice(len(test_images), size=min(n, len(test_images)), replace=False)
    groups = {
        "test images": test_images[picks],
        "uniform noise": rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
        "Gaussian noise": np.clip(rng.normal(128, 64, size=(n, *shape)), 0, 255).astype(np.uint8),
        "blank black": np.zeros((1, *shape), np.uint8),
        "blank white": np.full((1, *shape), 255, np.uint8),
    }
    if with_photos:
        groups.update({f"photo: {k}": v[None] for k, v in photos(shape).items()})
    return groups


@dataclass
class GroupReport:
    name: str
    count: int
    mean_confidence: float
    flagged: float  # fraction below the threshold
    predicted: np.ndarray  # (classes,) counts
    act1_mean: float
    act1_saturated: float
    act2_mean: float
    act2_saturated: float


def saturation(values: torch.Tensor, activation: str) -> float:
    """Fraction of units at the ends of their range: sigmoid/tanh within 5% of a bound,
    ReLU-like exactly 0 (inactive)."""
    if activation == "sigmoid":
        return float(((values < 0.05) | (values > 0.95)).float().mean())
    if activation == "tanh":
        return float((values.abs() > 0.95).float().mean())
    return float((values <= 0).float().mean())


def analyse(predictor: Predictor, groups: dict[str, np.ndarray], threshold: float,
            kind: str = "msp",
            flag: Callable[[str, np.ndarray], Sequence[bool] | np.ndarray] | None = None,
            ) -> list[GroupReport]:
    """Per group: confidence, flagged share, predicted classes, layer statistics. `flag`
    ((group name, images) -> bool per image) replaces the `kind` score below `threshold`
    as the OOD flag."""
    activation = predictor.model.config.activation
    reports = []
    for name, images in groups.items():
        x = predictor.as_batch(images)
        with torch.inference_mode():
            logits, acts = capture(predictor.model, x, ("act1", "act2"))
        logits = logits.float().cpu()
        flags = flag(name, images) if flag is not None else score(logits, kind) < threshold
        predicted = np.bincount(logits.argmax(1).numpy(), minlength=len(predictor.classes))
        a1, a2 = acts["act1"].float().cpu(), acts["act2"].float().cpu()
        reports.append(GroupReport(
            name, len(images), float(torch.softmax(logits, 1).max(1).values.mean()),
            float(np.mean(flags)), predicted, float(a1.mean()),
            saturation(a1, activation), float(a2.mean()), saturation(a2, activation)))
    return reports


def format_reports(reports: list[GroupReport], classes: list[str], threshold: float,
                   kind: str, tpr: float, flag_note: str | None = None) -> str:
    head = ("group", "n", "max-softmax", "flagged", "act1 mean", "act1 sat", "act2 mean",
            "act2 sat", "top predictions")
    rows = []
    for r in reports:
        top = np.argsort(-r.predicted)[:2]
        tops = ", ".join(f"{classes[i]} {r.predicted[i] / r.count:.0%}" for i in top
                         if r.predicted[i])
        rows.append((r.name, str(r.count), f"{r.mean_confidence:.3f}", f"{r.flagged:.0%}",
                     f"{r.act1_mean:.3f}", f"{r.act1_saturated:.1%}", f"{r.act2_mean:.3f}",
                     f"{r.act2_saturated:.1%}", tops))
    lines = [format_table(head, rows, align="lrrrrrrrl")]
    note = flag_note or (f"{kind} score below {threshold:.4f}, the threshold that {tpr:.0%} "
                         "of test images pass")
    lines.append(f"flagged: {note}; sat: sigmoid/tanh units within 5% of a bound, "
                 "ReLU units at 0")
    return "\n".join(lines)


def plot_reports(reports: list[GroupReport], groups: dict[str, np.ndarray],
                 classes: list[str], path: str | Path, threshold_confidence: float | None,
                 title: str) -> Path:
    """Example inputs per group, mean confidence per group, predicted-class shares."""
    n = len(reports)
    fig = Figure(figsize=(max(10, 1.1 * n), 7.5), dpi=110)
    grid = fig.add_gridspec(2, n, height_ratios=[1, 4.5], hspace=0.25)
    for i, r in enumerate(reports):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(groups[r.name][0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(r.name.replace("photo: ", "").replace(" ", "\n", 1), fontsize=7)
        ax.set_xticks([])  # keep the frame: a blank white input must still be visible
        ax.set_yticks([])
    bottom = grid[1, :].subgridspec(1, 2, wspace=0.55, width_ratios=[1, 1.3])
    ax = fig.add_subplot(bottom[0])
    names = [r.name for r in reports]
    ax.barh(names, [r.mean_confidence for r in reports], color="C0")
    if threshold_confidence is not None:
        ax.axvline(threshold_confidence, color="C3", ls="--", label="OOD threshold")
        ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean max-softmax probability")
    ax.set_title("how confident the model is")
    ax = fig.add_subplot(bottom[1])
    shares = np.stack([r.predicted / r.count for r in reports])
    image = ax.imshow(shares, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_title("share of each group predicted as each class")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share")
    fig.suptitle(title)
    fig.savefig(path, bbox_inches="tight")
    return Path(path)
