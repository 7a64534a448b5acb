"""A run's fitted OOD detectors and their calibrated thresholds, saved beside the checkpoint.

    RUN/ood-detectors.npz   every detector's fitted arrays, the calibration scores,
                            and the indices (into the training split) of the images
    RUN/ood-detectors.json  format version, default detector, thresholds, and what the
                            detectors were fitted and calibrated on

A `FittedDetectors` scores images with any detector and flags those below its
threshold; thresholds for another true-positive rate come from the stored
calibration scores, so no data is needed at prediction time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..base.atomic import atomic_path, write_text
from ..errors import LenetError
from . import photo_check
from .detectors import Detector, Inputs, make_detectors

# Per image, the statistics of the original file (lenet.data.originals), or None for an
# input that had no file or was taken as it is.
Originals = Sequence[np.ndarray | None] | None

FORMAT = "lenet-ood"
VERSION = 2  # 2: the pixel check gained a fifth statistic (a frame lit on two opposite sides)
ARRAYS, META = "ood-detectors.npz", "ood-detectors.json"
# The detector `lenet predict` and `Run.classify` flag with: the best far-OOD and glyph
# AUROC on `lenet ood RUN --benchmark` (docs/explanation/ood.md).
DEFAULT = "combined"
TPR = 0.95


@dataclass(frozen=True)
class Verdict:
    """One image's out-of-distribution check."""

    detector: str
    score: float  # higher = more like the training data
    threshold: float  # flagged below it
    out_of_distribution: bool

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "score": self.score, "threshold": self.threshold,
                "out_of_distribution": self.out_of_distribution}


def threshold_at(scores: np.ndarray, tpr: float) -> float:
    """The highest threshold that at least `tpr` of `scores` reach or exceed."""
    ordered = np.sort(np.asarray(scores))
    return float(ordered[min(int(np.floor((1 - tpr) * len(ordered) + 1e-9)), len(ordered) - 1)])


def fingerprint(state: dict[str, Any]) -> str:
    """A short hash of a model's weights: detectors belong to the weights they were fitted on."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class FittedDetectors:
    def __init__(self, detectors: dict[str, Detector], calibration: dict[str, np.ndarray],
                 record: dict[str, Any], *, indices: dict[str, np.ndarray] | None = None,
                 default: str = DEFAULT, tpr: float = TPR) -> None:
        self.detectors, self.calibration = detectors, calibration
        self.record, self.default, self.tpr = record, default, tpr
        # Rows of the training split: "fit" (detectors fitted on), "calibration" (thresholds).
        self.indices = indices or {}
        self._thresholds: dict[tuple[str, float], float] = {}  # a sort of 2,000 scores each

    @property
    def names(self) -> list[str]:
        return list(self.detectors)

    def detector(self, name: str | None = None) -> Detector:
        """The fitted detector `name` (default: the default one)."""
        name = name or self.default
        if name not in self.detectors:
            raise LenetError(f"unknown OOD detector {name!r}; choose from "
                             f"{', '.join(self.detectors)}")
        return self.detectors[name]

    def threshold(self, name: str | None = None, tpr: float | None = None) -> float:
        """The score that `tpr` of the calibration images reach or exceed."""
        key = (name or self.default, tpr or self.tpr)
        if key not in self._thresholds:
            self.detector(key[0])
            self._thresholds[key] = threshold_at(self.calibration[key[0]], key[1])
        return self._thresholds[key]

    def scores(self, inputs: Inputs, names: list[str] | None = None,
               originals: Originals = None) -> dict[str, np.ndarray]:
        """Every (or each named) detector's scores; `originals` (one per image: the original
        file's statistics, or None) add the photo check to the detectors it is part of."""
        return {n: photo_check.adjust(self.detector(n).score(inputs), n, originals)
                for n in names or self.names}

    def assess(self, inputs: Inputs, name: str | None = None, tpr: float | None = None,
               originals: Originals = None) -> list[Verdict]:
        name = name or self.default
        scores = photo_check.adjust(self.detector(name).score(inputs), name, originals)
        threshold = self.threshold(name, tpr)
        return [Verdict(name, float(s), threshold, bool(s < threshold)) for s in scores]

    def save(self, run_dir: str | Path) -> Path:
        """Write the arrays and the JSON atomically (the JSON last: it says the pair is whole)."""
        run_dir = Path(run_dir)
        arrays = {f"{n}.{k}": v for n, d in self.detectors.items() for k, v in d.state().items()}
        arrays.update({f"calibration.{n}": v for n, v in self.calibration.items()})
        arrays.update({f"indices.{k}": v for k, v in self.indices.items()})
        # A file object, not a path: numpy would add ".npz" to the temporary's name.
        with atomic_path(run_dir / ARRAYS) as tmp, tmp.open("wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy's stubs: **kwds may name allow_pickle
        meta = {"format": FORMAT, "version": VERSION, "default": self.default, "tpr": self.tpr,
                "detectors": self.names,
                "thresholds": {n: self.threshold(n) for n in self.names}, **self.record}
        return write_text(run_dir / META, json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: str | Path) -> FittedDetectors:
        run_dir = Path(run_dir)
        meta_path = run_dir / META
        if not meta_path.is_file() or not (run_dir / ARRAYS).is_file():
            raise MissingDetectors(f"{run_dir} has no fitted OOD detectors ({META}, {ARRAYS}): "
                                   f"fit them with: lenet ood fit {run_dir}")
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as e:
            raise LenetError(f"{meta_path}: not readable JSON ({e}); refit with: "
                             f"lenet ood fit {run_dir}") from e
        if meta.get("format") != FORMAT:
            raise LenetError(f"{meta_path}: not a lenet OOD file")
        if meta.get("version", 0) > VERSION:
            raise LenetError(f"{meta_path}: OOD detectors in format version {meta.get('version')}"
                             f", this lenet reads version {VERSION}: upgrade lenet")
        if meta.get("version") != VERSION:  # older: like missing ones, refitted where possible
            raise MissingDetectors(f"{meta_path}: OOD detectors in the older format version "
                                   f"{meta.get('version')}; refit them with: lenet ood fit "
                                   f"{run_dir}")
        try:  # allow_pickle=False (numpy's default): arrays only, never code
            with np.load(run_dir / ARRAYS, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as e:  # numpy and zipfile raise many types for a broken file
            raise LenetError(f"{run_dir / ARRAYS}: not readable ({type(e).__name__}: {e}); "
                             f"refit with: lenet ood fit {run_dir}") from e
        detectors = make_detectors()
        missing = [n for n in meta["detectors"] if n not in detectors]
        if missing:
            raise LenetError(f"{meta_path}: unknown detectors {', '.join(missing)}")
        for name in meta["detectors"]:
            prefix = f"{name}."
            detectors[name].load_state({k[len(prefix):]: v for k, v in arrays.items()
                                        if k.startswith(prefix)})
        detectors = {n: detectors[n] for n in meta["detectors"]}
        calibration = {n: arrays[f"calibration.{n}"] for n in meta["detectors"]}
        record = {k: v for k, v in meta.items() if k not in (
            "format", "version", "default", "tpr", "detectors", "thresholds")}
        indices = {k[len("indices."):]: v for k, v in arrays.items() if k.startswith("indices.")}
        return cls(detectors, calibration, record, indices=indices, default=meta["default"],
                   tpr=meta["tpr"])


class MissingDetectors(LenetError):
    """A run without fitted detectors (trained before lenet fitted them, or stopped early)."""
