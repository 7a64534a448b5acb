"""The served run: opened once, warmed up, then asked from the event loop.

Classification goes through the micro-batcher's one worker thread (batching.py);
activations, which hook the PyTorch model's layers, through a second single
thread; the dataset (for "a random test image") loads on first use. Answers are
plain dicts, ready for JSON.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import gc
import hashlib
import io
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LenetError
from ..ood import photo_check
from ..training.loop import rows_with
from .batching import MicroBatcher
from .decoding import Decoder
from .limits import ApiError, Limits
from .metrics import Metrics


@dataclass(frozen=True)
class Options:
    run: str  # a run directory or checkpoint file
    backend: str = "auto"
    device: str = "cpu"
    threads: int = 1  # PyTorch's; the event loop has the other core(s)
    # PyTorch's for a batch request of WIDE_FROM+ images (None: every CPU): a batch keeps
    # the cores busy long enough to split well; single images stay on `threads`.
    batch_threads: int | None = None
    max_batch_size: int = 256  # images per micro-batch
    # The process is the server's alone (lenet serve): it sets process-wide things, PyTorch's
    # and OpenBLAS's threads and the collector; a process that only builds the app (tests)
    # keeps its own.
    own_process: bool = False


WIDE_FROM = 64  # images in one batch request that run on `batch_threads`


class Service:
    def __init__(self, options: Options, limits: Limits, metrics: Metrics) -> None:
        self.options, self.limits, self.metrics = options, limits, metrics
        self.ready = threading.Event()
        self.failure: str | None = None
        self.run: Any = None
        self.batcher: MicroBatcher | None = None
        # OpenMP's thread count is a per-thread setting: each model thread sets its own.
        self._maps = ThreadPoolExecutor(1, thread_name_prefix="lenet-activations",
                                        initializer=self._threads)
        self._data_lock = threading.Lock()

    # --- start-up (a thread of its own: /healthz answers meanwhile) -----------------------

    def _threads(self) -> None:
        if self.options.own_process:
            from ..base.device import set_threads

            set_threads(self.options.threads)

    def load(self) -> None:
        try:
            self._load()
        except LenetError as e:
            self.failure = str(e)
            print(f"lenet serve: error: {e}", file=sys.stderr)
        except Exception as e:  # a bug; /readyz reports it
            self.failure = f"{type(e).__name__}: {e}"
            raise

    def _load(self) -> None:
        from ..data.datasets import DATASETS
        from ..run.record import Run

        started = time.perf_counter()
        self._threads()
        if self.options.own_process:
            _one_blas_thread()
        run = Run.open(self.options.run, device=self.options.device)
        predictor = run.predictor(self.options.backend)
        try:
            self.detector: Any = run.ood_detector(backend=self.options.backend)
        except LenetError as e:
            self.detector = False
            print(f"lenet serve: note: no out-of-distribution check ({e})", file=sys.stderr)
        spec = DATASETS.get(run.checkpoint()["dataset"])
        self.decoder = Decoder(run.model.config.input_size, spec.object_fill if spec else 1.0,
                               self.limits.max_pixels)
        self.run, self.classes = run, run.classes
        self.info = self._describe(run, predictor)
        self.palette = _magma()
        self.batcher = MicroBatcher(self._classify, max_batch=self.options.max_batch_size,
                                    max_wait=self.limits.max_wait,
                                    max_queue=self.limits.max_queue,
                                    on_batch=self.metrics.model_call,
                                    on_start=self._threads)
        size = run.model.config.input_size
        for n in (1, 2, 8, 64, 256):  # every code path once: kernels built, caches filled
            self._classify(np.zeros((n, *size), np.uint8))
        self._activations(np.zeros(size, np.uint8), values=False)
        self.metrics.describe_model({k: self.info[k] for k in (
            "model", "backend", "dataset", "checkpoint_sha256")})
        # Everything loaded so far lives as long as the server: out of the collector's sight,
        # so its full collections stay short under load; and fewer young collections (a
        # request makes few cycles). p99 at concurrency 64 on 2 shared cores: ~210 -> ~110 ms.
        if self.options.own_process:
            gc.collect()
            gc.freeze()
            gc.set_threshold(10_000, 20, 20)
        self.metrics.ready.set(1)
        self.ready.set()
        print(f"lenet serve: {run.path} ready in {time.perf_counter() - started:.1f} s "
              f"({self.info['model']}, {predictor.backend} backend)", file=sys.stderr)

    def _describe(self, run: Any, predictor: Any) -> dict[str, Any]:
        file = Path(run.dir.checkpoint)
        history = run.history
        return {
            "model": run.config.model, "recipe": run.config.recipe,
            "parameters": sum(p.numel() for p in run.model.parameters()),
            "input_size": list(run.model.config.input_size), "dataset": run.checkpoint()["dataset"],
            "classes": run.classes, "epochs": len(history),
            # the last evaluated epoch's (--eval-every); none for a run validated on --val-split
            "test_accuracy": (float(tested[-1]["test_acc"])
                              if (tested := rows_with(history, "test_acc")) else None),
            "checkpoint": file.name,
            "checkpoint_sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
            "backend": predictor.backend, "device": str(predictor.device),
            "ood": ({"detector": self.detector.name, "threshold": self.detector.threshold,
                     "tpr": self.detector.tpr} if self.detector else None),
            "limits": self.limits.describe(),
        }

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self._maps.shutdown(wait=False)

    # --- answers --------------------------------------------------------------------------

    def check_ready(self) -> None:
        if not self.ready.is_set():
            raise ApiError(503, "not_ready", self.failure or "the model is still loading")

    def _classify(self, images: np.ndarray, top_k: int | None = None,
                  ood: bool = True) -> list[dict[str, Any]]:
        """The answer for each image, as /v1/predict's JSON has it: the `top_k` classes
        (default every class, ranked: a request cuts its own) and the OOD verdict (with
        `ood` where the run has a check). Built straight from the arrays: no object per
        image (a batch of 256 spent ~2 ms on those)."""
        if ood and self.detector:
            logits, scores = self.detector.scores(images)
        else:
            logits = self.run.predictor(self.options.backend).logits_of(images).numpy()
            scores = None
        return answers(logits, self.classes, top_k or len(self.classes), scores,
                       self.detector if scores is not None else None)

    async def classify_many(self, images: np.ndarray, top_k: int | None = None,
                            ood: bool = True) -> list[dict[str, Any]]:
        """A whole batch in one model call (`_classify`'s answers)."""
        classify = functools.partial(self._classify, top_k=top_k, ood=ood)
        assert self.batcher is not None, "the service has started"
        return list(await self.batcher.run(images, self._wide(classify)))

    def _wide(self, classify: Any) -> Any:
        """`classify`, run on `batch_threads` PyTorch threads for a batch of WIDE_FROM+
        images (setting the count costs ~1 us), then back to `threads`."""
        if not self.options.own_process:
            return classify
        from ..base.device import available_cpus, set_threads

        wide = self.options.batch_threads or available_cpus()

        def run(images: np.ndarray) -> Any:
            if len(images) < WIDE_FROM or wide == self.options.threads:
                return classify(images)
            set_threads(wide)
            try:
                return classify(images)
            finally:
                set_threads(self.options.threads)
        return run

    async def activations(self, pixels: np.ndarray, values: bool) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._maps, self._activations, pixels, values)

    def _activations(self, pixels: np.ndarray, values: bool) -> dict[str, Any]:
        acts = self.run.activations(pixels[None])
        layers = {}
        for name, output in acts.layers.items():
            maps = output[0].numpy()  # (C, H, W)
            low, high = float(maps.min()), float(maps.max())
            scaled = np.round((maps - low) / ((high - low) or 1.0) * 255).astype(np.uint8)
            layers[name] = {
                "channels": maps.shape[0], "height": maps.shape[1], "width": maps.shape[2],
                "min": low, "max": high,  # one colour scale for the layer's maps
                "png": [png_base64(m, self.palette) for m in scaled],
                **({"values": np.round(maps, 5).tolist()} if values else {})}
        probabilities = acts.probabilities[0].tolist()
        return {"layers": layers, "probabilities": dict(zip(self.classes, probabilities,
                                                            strict=True))}

    async def sample(self, split: str, index: int | None) -> dict[str, Any]:
        """One image of the run's dataset (the page's "random test image")."""
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, self._dataset_split, split)
        if index is None:
            index = int(np.random.default_rng().integers(len(data.labels)))
        elif not 0 <= index < len(data.labels):
            raise ApiError(404, "not_found", f"index {index}: the {split} split has "
                                             f"{len(data.labels):,} images")
        label = int(data.labels[index])
        return {"split": split, "index": index, "label": self.classes[label],
                "label_index": label, "png": png_base64(data.images[index])}

    def _dataset_split(self, split: str) -> Any:
        with self._data_lock:
            try:
                return getattr(self.run.dataset, split)
            except LenetError as e:
                raise ApiError(404, "no_dataset", f"the run's dataset is not available to "
                                                  f"this server: {e}") from None


def answers(logits: np.ndarray, classes: list[str], top_k: int, scores: np.ndarray | None,
            detector: Any) -> list[dict[str, Any]]:
    """One JSON-ready answer per row of `logits` (N, classes): the `top_k` classes with
    their softmax probabilities, best first, and the OOD verdict of each row's score (None
    without a check)."""
    probs = torch.softmax(torch.from_numpy(np.ascontiguousarray(logits, np.float32)),
                          dim=1).numpy()
    orders = np.argsort(-probs, axis=1)[:, :top_k]  # one sort for all rows
    tops = np.take_along_axis(probs, orders, axis=1).tolist()
    name = classes.__getitem__
    ranked = [[{"class": name(i), "index": i, "probability": p}
               for i, p in zip(order, top, strict=True)]
              for order, top in zip(orders.tolist(), tops, strict=True)]
    if scores is None:
        return [{**best[0], "top": best, "ood": None} for best in ranked]
    threshold, kind = detector.threshold, detector.name
    return [{**best[0], "top": best, "ood": {"out_of_distribution": score < threshold,
                                             "score": score, "threshold": threshold,
                                             "detector": kind}}
            for best, score in zip(ranked, scores.tolist(), strict=True)]


def with_photo_check(answer: dict[str, Any], original: np.ndarray | None) -> dict[str, Any]:
    """A picture's answer with the photo check (lenet.ood.photo_check) in its OOD verdict:
    the check reads the picture's original, which the micro-batch never sees."""
    verdict = answer.get("ood")
    if original is None or not verdict:
        return answer
    score = float(photo_check.adjust(np.array([verdict["score"]]), verdict["detector"],
                                     [original])[0])
    return {**answer, "ood": {**verdict, "score": score,
                              "out_of_distribution": score < verdict["threshold"]}}


def _one_blas_thread() -> None:
    """numpy's OpenBLAS threads (the OOD detectors' matrix products) spin between calls,
    taking the core the event loop needs; one thread is faster for batches this small."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the serve extra installs it; without it, only slower
        return
    threadpool_limits(1, user_api="blas")


def png_base64(pixels: np.ndarray, palette: bytes | None = None) -> str:
    """A (H, W) uint8 array as a base64 PNG, grayscale or through a 256-colour palette."""
    from PIL import Image

    image = Image.fromarray(pixels)
    if palette is not None:
        image.putpalette(palette)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _magma() -> bytes:
    """matplotlib's magma as a 256-entry RGB palette (activation maps, as `lenet
    activations` draws them)."""
    from matplotlib import colormaps

    rgb = colormaps["magma"](np.arange(256))[:, :3]
    return bytes(np.round(rgb * 255).astype(np.uint8).ravel())
