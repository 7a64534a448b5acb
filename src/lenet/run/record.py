"""`lenet.Run`: one training run, on disk and in memory.

    run = lenet.Run.create(lenet.TrainConfig(epochs=2))   # a new run directory
    result = run.fit()                                    # train; files go to sinks
    run = lenet.Run.open("runs/lenet5-...")               # a recorded run
    run.fit()                                             # ... resumed, if unfinished
    run.classify(images, top_k=5)                         # typed predictions
    run.evaluate("test"); run.activations(images)

Training is `lenet/run/fit.py` (phases) reporting to `lenet/run/sinks.py`; using a
trained model is `Predictor` (lenet/predict/predictor.py) and the modules it feeds.
A Run reads its checkpoint at most once and builds each predictor once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..data.datasets import SPLITS
from ..data.images import PreparedImage, pictures, prepare, prepare_image
from ..errors import ConfigError, note
from ..models.network import LeNet
from ..predict.activations import LAYERS, capture
from ..predict.evaluation import Evaluation, evaluate_split
from ..predict.predictor import Prediction, Predictor
from ..training import checkpoint, distributed
from ..training.checkpoint import Payload
from ..training.config import TrainConfig
from ..training.loop import HistoryRow
from . import fit as fitting
from .console import Console
from .directory import RunDir, read_metrics
from .events import Sink
from .fit import RunResult
from .resume import check_resumable
from .sinks import default_sinks
from .stop import StopRequest

if TYPE_CHECKING:
    from ..ood.fitted import Verdict
    from ..ood.runs import OODCheck


@dataclass(frozen=True)
class Activations:
    logits: torch.Tensor  # (N, classes), on the CPU
    layers: dict[str, torch.Tensor]  # layer name -> its output (N, C, H, W), on the CPU

    @property
    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=1)


@dataclass(frozen=True)
class ScoreDetector:
    """An out-of-distribution check (lenet.ood): one of the run's fitted detectors, its
    score higher for familiar inputs, and the threshold below which an input is flagged,
    set so that `tpr` of held-out in-distribution images pass (never the test split)."""

    name: str  # "combined" by default; msp, energy, mahalanobis, knn, pixels (lenet.ood)
    threshold: float
    tpr: float
    check: OODCheck  # the fitted detectors bound to a predictor

    def verdicts(self, images: Any, originals: Any = None) -> tuple[torch.Tensor, list[Verdict]]:
        """(logits (N, classes), a lenet.ood.fitted.Verdict per image), one forward pass;
        `originals`: per image, its file's statistics (PreparedImage.original) or None."""
        return self.check.check(images, self.name, self.tpr, originals)

    def scores(self, images: Any, originals: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N, classes), scores (N,)), one forward pass; a score below `threshold`
        is out of distribution. Arrays, no object per image (`verdicts` builds those)."""
        return self.check.check_scores(images, self.name, originals)


class Run:
    """A run directory and what it holds. Build one with `Run.create` or `Run.open`."""

    def __init__(self, run_dir: RunDir, config: TrainConfig,
                 payload: Payload | None = None) -> None:
        self.dir, self.config = run_dir, config
        self._payload = payload  # the checkpoint, once read
        self._model: LeNet | None = None
        self._predictors: dict[tuple[str, str], Predictor] = {}
        self._dataset: Any = None
        self._ood_checks: dict[str, Any] = {}  # backend -> lenet.ood.runs.OODCheck
        self._from_start = False  # opened before its first checkpoint (Run.open)

    @property
    def path(self) -> Path:
        return self.dir.path

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.config.model!r})"

    @classmethod
    def create(cls, config: TrainConfig, *, lock: bool = True) -> Run:
        """A new, empty run directory for `config` (OUT_DIR/NAME), locked for this process
        until `fit` ends (`lock=False` in the processes that do not write it)."""
        made: list[RunDir] = []

        def make() -> Path:
            made.append(RunDir.create(config.out_dir, config.name, default_stem=config.model,
                                      lock=lock))
            return made[0].path

        path = distributed.world().from_main(make)  # under torchrun rank 0 makes it
        return cls(made[0] if made else RunDir(path), config)

    @classmethod
    def open(cls, path: str | Path, **overrides: Any) -> Run:
        """A recorded run: its directory or checkpoint file. `overrides` change where it runs
        (device, threads, data_dir), how often it is evaluated (eval_every) or, to train on,
        epochs; nothing else."""
        run_dir = RunDir(path)
        if _never_saved(run_dir):  # stopped (kill -9) before its first checkpoint: fit
            saved = TrainConfig.from_dict(run_dir.read_json(RunDir.CONFIG)["train"])
            run = cls(run_dir, saved.replace(**check_resumable(saved, overrides)))
            run._from_start = True  # fit trains it from the start, and says so
            return run
        # a corrupt newest checkpoint: the previous good one, said in a note
        file, payload = checkpoint.load_latest(path, note)
        saved = TrainConfig.from_dict(payload["train_config"])
        config = saved.replace(**check_resumable(saved, overrides))
        return cls(RunDir(file.parent), config, payload)

    # --- training -------------------------------------------------------------------------

    def default_sinks(self, console: Console | None = None) -> list[Sink]:
        """The sinks `fit` uses unless given others: add yours to this list."""
        return default_sinks(self.dir, self.config, console or Console())

    def fit(self, *, console: Console | None = None, stop: StopRequest | None = None,
            sinks: Sequence[Sink] | None = None, background_imports: bool = True,
            lock: bool = True) -> RunResult:
        """Train to `config.epochs`, from the start or from the checkpoint.

        `sinks` default to `default_sinks(console)`; `stop` is asked after each step
        (Ctrl-C sets it). `background_imports` imports matplotlib and torch._dynamo on a
        daemon thread during set-up, so they are ready when needed (warmup.py). `lock`
        takes the run's lock (lenet/base/lock.py) for the process that writes its files; pass
        False in the others when several train one run."""
        payload = self._payload
        # Trained to the end but killed before results.json: fit only finishes it (results,
        # curves, OOD detectors), its epochs loop empty.
        if payload is not None and payload["epoch"] >= self.config.epochs and self.finished:
            raise ConfigError(f"{self.path} already finished {payload['epoch']} of "
                              f"{self.config.epochs} epochs; pass a larger --epochs to train on")
        if self._from_start:
            note(f"{self.path} has no checkpoint yet: training it from the start")
        sinks = self.default_sinks(console) if sinks is None else list(sinks)
        if lock and distributed.world().main:
            self.dir.lock.acquire()  # one writer per run (lenet/base/lock.py); Run.create took it
        try:
            return fitting.fit(self.dir, self.config, payload, sinks, stop, background_imports)
        finally:  # the checkpoint on disk is newer now: read it again when next needed
            self.dir.lock.release()
            self._payload, self._model, self._from_start = None, None, False
            self._predictors.clear()
            self._ood_checks.clear()

    # --- what it recorded -----------------------------------------------------------------

    def checkpoint(self) -> Payload:
        """The checkpoint's contents (read from disk once)."""
        if self._payload is None:
            self._payload = checkpoint.load(self.dir.checkpoint)
        return self._payload

    @property
    def history(self) -> list[HistoryRow]:
        """One row per finished epoch (metrics.csv's rows)."""
        if self._payload is None and self.dir.file(RunDir.METRICS).exists():
            return read_metrics(self.dir.file(RunDir.METRICS))
        return list(self.checkpoint()["history"])

    @property
    def finished(self) -> bool:
        return self.dir.file(RunDir.RESULTS).exists()

    @property
    def classes(self) -> list[str]:
        return list(self.checkpoint()["classes"])

    @property
    def model(self) -> LeNet:
        """The trained model, on the CPU, in eval mode."""
        if self._model is None:
            self._model = checkpoint.model_from_payload(self.checkpoint(), "cpu")
        return self._model

    @property
    def dataset(self) -> Any:
        """The run's dataset (lenet.data.sources.Dataset), loaded on first use."""
        if self._dataset is None:
            from ..data import sources

            self._dataset = sources.load(self.checkpoint()["dataset"], self.config.data_dir)
        return self._dataset

    # --- using the trained model ----------------------------------------------------------

    def predictor(self, backend: str = "auto", precision: str = "fp32") -> Predictor:
        """The model ready to answer, on the run's device (`Run.open(path, device=...)`);
        built once per backend and precision."""
        key = (backend, precision)
        if key not in self._predictors:
            from ..base.device import pick_device

            self._predictors[key] = Predictor(
                copy.deepcopy(self.model), self.classes, pick_device(self.config.device),
                backend=backend, precision=precision, source=self.dir.checkpoint)
        return self._predictors[key]

    def load_image(self, path: str | Path | Image.Image | PreparedImage, *,
                   invert: bool | None = None) -> PreparedImage:
        """An image file (or PIL image) made to look like the run's training data by the one
        rule every entry point follows (lenet.data.images.prepare_image)."""
        from ..data.datasets import DATASETS

        if isinstance(path, PreparedImage):
            return path
        spec = DATASETS.get(self.checkpoint()["dataset"])
        how: dict[str, Any] = {"size": self.model.config.input_size, "invert": invert,
               "fill": spec.object_fill if spec else 1.0}
        if isinstance(path, Image.Image):
            return prepare_image(path, **how)
        return prepare(path, **how)

    def ood_detector(self, name: str | None = None, tpr: float | None = None,
                     backend: str = "auto") -> ScoreDetector:
        """The out-of-distribution check: detector `name` (default: the run's, `combined`) at
        `tpr` (default 0.95), as fitted at the end of training (RUN/ood-detectors.json); a
        run without them (older, or stopped early) has them fitted now, on its training
        images, and saved."""
        if backend not in self._ood_checks:
            from ..ood.runs import open_check

            self._ood_checks[backend] = open_check(
                self.path, self.predictor(backend), self.checkpoint(),
                lambda: self.dataset.train, note=note)
        check = self._ood_checks[backend]
        name, tpr = name or check.default, tpr or check.fitted.tpr
        return ScoreDetector(name, check.fitted.threshold(name, tpr), tpr, check)

    def classify(self, images: Any, top_k: int = 5, *, ood: ScoreDetector | bool = True,
                 backend: str = "auto") -> list[Prediction]:
        """Predictions for `images`: uint8 (N, H, W) or (H, W), or float (N, 1, H, W) in
        [0, 1], taken as they are; or pictures (a file path, a PIL image, a PreparedImage,
        or a list of them), prepared as `lenet predict` prepares files (`load_image`), the
        photo check reading each original. `ood=True` checks each against
        `ood_detector()`; pass a detector, or False for no check."""
        predictor = self.predictor(backend)
        originals = None
        items = pictures(images)
        if items is not None:
            prepared = [self.load_image(item) for item in items]
            images = np.stack([p.pixels for p in prepared])
            originals = [p.original for p in prepared]
        detector = self.ood_detector(backend=backend) if ood is True else ood or None
        if detector is None:
            return predictor.predictions(predictor.logits_of(images), top_k=top_k)
        logits, verdicts = detector.verdicts(images, originals)  # classes, features, score
        return predictor.predictions(logits, top_k=top_k, verdicts=verdicts)

    def evaluate(self, split: str | Any = "test", *, name: str | None = None,
                 backend: str = "auto") -> Evaluation:
        """Loss, accuracy, per-class metrics and confusion matrix on a split of the run's
        dataset ("test" or "train"), or on any object with `images` and `labels`; with the
        run's own test-time augmentation (`--tta`), so its test figure is the one it recorded."""
        if isinstance(split, str):
            if split not in SPLITS:
                raise ConfigError(f"unknown split {split!r}; choose {' or '.join(SPLITS)}")
            name, split = name or split, getattr(self.dataset, split)
        return evaluate_split(self.predictor(backend), split.images, split.labels,
                              name or "custom", tta=self.config.tta)

    def activations(self, images: Any, layers: Sequence[str] = LAYERS) -> Activations:
        """The outputs of the named layers (default: after conv1 and conv2) for `images`."""
        predictor = self.predictor("torch")
        with torch.inference_mode():
            logits, acts = capture(predictor.model, predictor.as_batch(images), layers)
        return Activations(logits.float().cpu(), {k: v.float().cpu() for k, v in acts.items()})

    def export_onnx(self, path: str | Path) -> Path:
        """The model as ONNX: input 'images' (batch, 1, H, W) float32 in [0, 1]."""
        from ..exports.to_onnx import export_onnx

        return export_onnx(self.predictor("torch"), path)

    def verify_onnx(self, path: str | Path) -> Any:
        """Compare an exported file with PyTorch on the whole test split: an
        exports.agreement.Agreement."""
        from ..exports.to_onnx import verify

        test = self.dataset.test
        return verify(path, self.predictor("torch"), test.images, test.labels)

    def output(self, given: str | Path | None, default: str) -> Path:
        """Where a command writes: `given` (--out), else `default` in the run directory."""
        return Path(given) if given else self.dir.file(default)


def _never_saved(run_dir: RunDir) -> bool:
    """A run directory with its record (config.json) and no checkpoint of either name."""
    return (run_dir.path.is_dir() and run_dir.file(RunDir.CONFIG).is_file()
            and not run_dir.checkpoint.exists()
            and not checkpoint.previous(run_dir.checkpoint).exists())
