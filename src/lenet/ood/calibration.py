"""Fitting a run's OOD detectors on training images, calibrating them on other ones.

Thresholds are set on in-distribution images that are neither the test split
(which must stay a fair measure) nor the images the detectors were fitted on:

- a run that kept `ood_holdout` training images out of training (the recipes
  other than the book's keep 2,000) is calibrated on exactly those: honest,
  the model never saw them;
- a run that trained on every image (the book's recipe, so its training stream
  and its 0.7374 stay the book's) is calibrated on `CALIBRATION_IMAGES`
  training images the detectors were not fitted on; the model did see them, so
  the thresholds are optimistic (slightly too many test images flagged), and
  the record says so.

The detectors are fitted on `FIT_IMAGES` other training images: enough for a
shared 84x84 covariance and a k-NN bank of `KNN_BANK` (more of either changed
no AUROC by more than 0.005 on a fast-recipe run), cheap enough to run at the
end of every `lenet train`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..data.loader import calibration_holdout
from .detectors import Inputs, make_detectors
from .features import FeatureExtractor
from .fitted import DEFAULT, TPR, FittedDetectors

FIT_IMAGES = 5_000
CALIBRATION_IMAGES = 2_000
KNN_K, KNN_BANK = 5, 2_000


def choose_images(n: int, holdout: int, seed: int, n_fit: int = FIT_IMAGES,
                  n_calibration: int = CALIBRATION_IMAGES) -> tuple[np.ndarray, np.ndarray, bool]:
    """(fit indices, calibration indices, calibration images held out of training), both
    into the training split and disjoint."""
    rng = np.random.default_rng((seed, 17))
    held = calibration_holdout(n, holdout, seed)
    if len(held):
        calibration, pool = held, np.setdiff1d(np.arange(n), held)
    else:
        order, count = rng.permutation(n), min(n_calibration, n // 5)
        calibration, pool = np.sort(order[:count]), order[count:]
    fit = np.sort(rng.choice(pool, size=min(n_fit, len(pool)), replace=False))
    return fit, calibration, bool(len(held))


def inputs_of(extractor: FeatureExtractor, images: np.ndarray) -> Inputs:
    features, logits = extractor.batch(images)
    return Inputs(features, logits, np.asarray(images))


def fit(extractor: FeatureExtractor, images: np.ndarray, labels: np.ndarray, *,
        holdout: int = 0, seed: int = 0, n_fit: int = FIT_IMAGES,
        n_calibration: int = CALIBRATION_IMAGES, default: str = DEFAULT,
        tpr: float = TPR) -> FittedDetectors:
    """Detectors fitted and calibrated on the training split `images`, `labels` (uint8
    (N, H, W), (N,)); `holdout` and `seed` are the run's (TrainConfig.ood_holdout, seed)."""
    started = time.perf_counter()
    fit_rows, cal_rows, held_out = choose_images(len(images), holdout, seed, n_fit,
                                                 n_calibration)
    fit_inputs = inputs_of(extractor, images[fit_rows])
    cal_inputs = inputs_of(extractor, images[cal_rows])
    detectors = make_detectors(KNN_K, KNN_BANK, seed)
    fit_labels = np.asarray(labels)[fit_rows].astype(np.int64)
    for d in detectors.values():  # in order: `combined` last, after its parts
        d.fit(fit_inputs, fit_labels)
    calibration = {name: d.score(cal_inputs) for name, d in detectors.items()}
    record: dict[str, Any] = {
        "fit": {"split": "train", "images": len(fit_rows), "seed": seed,
                "knn": {"k": KNN_K, "bank": min(KNN_BANK, len(fit_rows))}},
        "calibration": {
            "split": "train", "images": len(cal_rows), "seed": seed,
            "held_out_of_training": held_out,
            "note": (f"the {len(cal_rows):,} training images this run kept out of training "
                     "(TrainConfig.ood_holdout): honest" if held_out else
                     f"{len(cal_rows):,} training images not used for fitting; the model "
                     "trained on them, so the thresholds are optimistic")},
        "fit_seconds": round(time.perf_counter() - started, 3),
    }
    return FittedDetectors(detectors, calibration, record, default=default, tpr=tpr,
                 indices={"fit": fit_rows, "calibration": cal_rows})
