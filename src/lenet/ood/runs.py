"""A run's OOD check: its fitted detectors (RUN/ood-detectors.json, .npz) bound to a predictor.

`OODCheck.check(images)` returns the logits and one `Verdict` per image from
one forward pass; `check_one(image)` is the single-image, low-latency path
(`lenet predict`, later `lenet serve`). `open_check` loads a run's detectors,
fitting them first when the run has none (trained before lenet fitted them, or
stopped early) or when they belong to other weights (the run trained on).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..base.atomic import write_text
from ..errors import LenetError
from ..models.network import LeNet
from ..predict.predictor import Predictor, single_image
from ..training.checkpoint import Payload
from . import benchmark, calibration, photo_check
from .detectors import Inputs
from .features import FeatureExtractor
from .fitted import META, FittedDetectors, MissingDetectors, Originals, Verdict, fingerprint
from .probes import probe_sets

BENCHMARK_FILES = ("ood-benchmark.md", "ood-benchmark.json", "ood-benchmark.png")


class OODCheck:
    def __init__(self, predictor: Predictor, fitted: FittedDetectors) -> None:
        self.predictor, self.fitted = predictor, fitted
        self.extractor = FeatureExtractor(predictor)

    @property
    def default(self) -> str:
        return self.fitted.default

    def inputs(self, images: Any) -> Inputs:
        """Features, logits and uint8 pixels of `images` (uint8 (N, H, W) or (H, W))."""
        pixels = np.asarray(images)
        if pixels.ndim == 2:
            pixels = pixels[None]
        if pixels.dtype != np.uint8:  # float (N, 1, H, W) in [0, 1]
            pixels = np.round(np.clip(pixels.reshape(len(pixels), *pixels.shape[-2:]), 0, 1)
                              * 255).astype(np.uint8)
        return Inputs(*self.extractor.batch(pixels), pixels)

    def check(self, images: Any, detector: str | None = None, tpr: float | None = None,
              originals: Originals = None) -> tuple[torch.Tensor, list[Verdict]]:
        """(logits (N, classes), a verdict per image) from one forward pass; `originals`:
        per image, its file's statistics (lenet.data.originals) or None."""
        one = single_image(images)
        if one is not None:  # no batch machinery for one image
            logits, verdict = self.check_one(one, detector, tpr, originals)
            return torch.from_numpy(np.asarray(logits))[None], [verdict]
        x = self.inputs(images)
        return torch.from_numpy(x.logits), self.fitted.assess(x, detector, tpr, originals)

    def check_one(self, image: np.ndarray, detector: str | None = None,
                  tpr: float | None = None, originals: Originals = None
                  ) -> tuple[np.ndarray, Verdict]:
        """(logits (classes,), verdict) of one uint8 (H, W) image."""
        x = self.inputs_one(image)
        return x.logits[0], self.fitted.assess(x, detector, tpr, originals)[0]

    def inputs_one(self, image: np.ndarray) -> Inputs:
        """`inputs` of one uint8 (H, W) image, by the extractor's low-latency path."""
        features, logits = self.extractor.one(image)
        return Inputs(features[None], np.asarray(logits)[None], np.asarray(image)[None])

    def check_scores(self, images: Any, detector: str | None = None,
                     originals: Originals = None) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N, classes), scores (N,)) from one forward pass, as arrays: an image
        scoring below the detector's threshold is out of distribution. No object per image:
        lenet serve's batches build their answers straight from these."""
        one = single_image(images)
        x = self.inputs(images) if one is None else self.inputs_one(one)
        name = detector or self.default
        return x.logits, photo_check.adjust(self.fitted.detector(name).score(x), name, originals)

    def scores(self, images: np.ndarray, originals: Originals = None) -> dict[str, np.ndarray]:
        """Every detector's scores for `images` (the benchmark's view)."""
        return self.fitted.scores(self.inputs(images), originals=originals)


def fit(run_dir: str | Path, predictor: Predictor, train_images: np.ndarray,
        train_labels: np.ndarray, train_config: dict[str, Any],
        epoch: int | None) -> FittedDetectors:
    """Fit a run's detectors on its training split and save them beside its checkpoint.
    `train_config` is the run's (TrainConfig.to_dict(): its seed and ood_holdout)."""
    fitted = _fit(predictor, train_images, train_labels, train_config, epoch)
    fitted.save(run_dir)
    return fitted


def _fit(predictor: Predictor, train_images: np.ndarray, train_labels: np.ndarray,
         train_config: dict[str, Any], epoch: int | None) -> FittedDetectors:
    if tuple(train_images.shape[1:]) != tuple(predictor.input_size):
        h, w = predictor.input_size
        raise LenetError(f"the model takes {h}x{w} images and the training images are "
                         f"{train_images.shape[1]}x{train_images.shape[2]} (--resize): lenet "
                         "fits OOD detectors only for models of the data's image size")
    fitted = calibration.fit(FeatureExtractor(predictor), train_images, train_labels,
                            holdout=int(train_config.get("ood_holdout") or 0),
                            seed=int(train_config.get("seed") or 0))
    fitted.record["model"] = {"epoch": epoch, "fingerprint": fingerprint(
        predictor.model.state_dict())}
    return fitted


def fit_after_training(model: LeNet, classes: list[str], train_images: np.ndarray,
                       train_labels: np.ndarray, train_config: dict[str, Any],
                       epoch: int) -> FittedDetectors:
    """A finished run's detectors, fitted from what training holds in memory (the model,
    the training split), not yet saved (sinks.OODSink saves them)."""
    from ..training.checkpoint import model_from_payload

    clean = model_from_payload({"model_config": model.config.to_dict(),  # a plain LeNet
                                "model_state": model.state_dict()}, "cpu")
    return _fit(Predictor(clean, classes, "cpu", backend="torch"), train_images, train_labels,
                train_config, epoch)


def open_check(run_dir: str | Path, predictor: Predictor, payload: Payload,
               train_split: Callable[[], Any] | None = None,
               note: Callable[[str], None] = lambda _: None) -> OODCheck:
    """The run's check; when its detectors are missing or stale and `train_split` (a callable
    giving the run's training split) is given, they are fitted and saved first."""
    try:
        fitted = FittedDetectors.load(run_dir)
        current = fingerprint(predictor.model.state_dict())
        if fitted.record.get("model", {}).get("fingerprint") == current:
            return OODCheck(predictor, fitted)
        why = f"{run_dir}/{META} belongs to other weights of this run"
    except MissingDetectors:
        if train_split is None:
            raise
        why = f"{run_dir} has no fitted OOD detectors"
    if train_split is None:
        raise MissingDetectors(f"{why}: refit them with: lenet ood fit {run_dir}")
    started = time.perf_counter()
    split = train_split()
    fitted = fit(run_dir, predictor, split.images, split.labels, payload.get("train_config", {}),
                payload.get("epoch"))
    note(f"{why}: fitted them on its training images in {time.perf_counter() - started:.1f} s "
         f"({run_dir}/{META})")
    return OODCheck(predictor, fitted)


def run_benchmark(check: OODCheck, test_images: np.ndarray, out_dir: str | Path, *,
                  n: int = 500, seed: int = 0, title: str = "",
                  conditions: dict[str, Any] | None = None) -> benchmark.Benchmark:
    """Every detector against every offline OOD set, the test split as in-distribution;
    writes the markdown table, the JSON and the ROC figure into `out_dir`."""
    out_dir = Path(out_dir)
    sets = probe_sets(test_images, n=n, seed=seed)
    fitted = check.fitted
    result = benchmark.run(check.scores, test_images, sets,
                           {d: fitted.threshold(d) for d in fitted.names}, fitted.tpr,
                           {**(conditions or {}), "ood_sets_seed": seed, "n_per_random_set": n,
                            "calibration": fitted.record.get("calibration", {}).get("note")})
    md, js, png = (out_dir / name for name in BENCHMARK_FILES)
    write_text(md, benchmark.format_markdown(result, fitted.default) + "\n")
    write_text(js, json.dumps({**result.to_dict(), "default": fitted.default}, indent=2) + "\n")
    benchmark.plot_roc(result, png, title)
    return result
