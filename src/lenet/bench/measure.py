"""The measurements behind `lenet bench`; each returns numbers, none prints.

Training speeds are examples per second of whole epochs (or a fixed number of
steps) through lenet's own `train_one_epoch`, so they include batching, the
optimizer step and metric accounting. Contenders that are compared run in the
same process, alternating, so that a noisy machine affects both alike.
"""

from __future__ import annotations

import io
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.loader import make_loaders
from ..data.sources import Dataset
from ..models.config import MODELS
from ..models.network import build_model
from ..native.fastpath import prepare_model
from ..predict.predictor import Predictor
from ..run.directory import read_metrics
from ..run.shortcuts import AUTOCAST
from ..training.config import TrainConfig
from ..training.loop import train_one_epoch
from ..training.optim import build_optimizer
from .book_pipeline import book_dataloader, book_fit_epoch

# LeNet-5 per training example: the forward pass (416,520 multiply-adds), the weight
# gradients (as many) and the input gradients of every layer but conv1 (117,600
# fewer), at 2 FLOP per multiply-add: 2,263,920 FLOP.
TRAIN_FLOP_PER_EXAMPLE = 2 * (2 * 416_520 + (416_520 - 117_600))


@dataclass(frozen=True)
class Comparison:
    book: list[float]  # examples/s per round
    lenet: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(o / b for o, b in zip(self.lenet, self.book, strict=True))


def book_vs_lenet(data: Dataset, rounds: int = 2) -> Comparison:
    """lenet5 with the book's recipe (SGD 0.1, batch 128, fp32): one epoch of each, alternating."""
    config = TrainConfig()
    device = torch.device("cpu")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*worker processes in total.*")
        book_model = build_model(MODELS["lenet5"], seed=0)
        book_optim = torch.optim.SGD(book_model.parameters(), lr=config.lr)
        book_loader = book_dataloader(data.train.images, data.train.labels, config.batch_size,
                                      train=True)
        loaders = make_loaders(data, device, batch_size=config.batch_size, seed=0)
        model = prepare_model(build_model(MODELS["lenet5"], seed=0), device)
        optim = build_optimizer(model.parameters(), config)
        book, ours = [], []
        for epoch in range(rounds):
            n, seconds = book_fit_epoch(book_model, book_loader, book_optim)
            book.append(n / seconds)
            ours.append(train_one_epoch(model, loaders.train, optim, epoch=epoch)
                        .examples_per_sec)
    return Comparison(book, ours)


def steps_per_second(data: Dataset, config: TrainConfig, steps: int = 120) -> float:
    """Training examples/s of `config` over `steps` steps after a short warm-up."""
    device = torch.device(config.device if config.device != "auto" else "cpu")
    loaders = make_loaders(data, device, batch_size=config.batch_size, seed=0,
                           augment=config.augment)
    model = prepare_model(build_model(config.model_config(), seed=0), device)
    optim = build_optimizer(model.parameters(), config)
    dtype = AUTOCAST[config.precision]
    train_one_epoch(model, loaders.train, optim, should_stop=_after(10),  # warm-up
                    autocast_dtype=dtype)
    return train_one_epoch(model, loaders.train, optim, epoch=1, should_stop=_after(steps),
                           autocast_dtype=dtype).examples_per_sec


def _after(steps: int) -> Callable[[], bool]:
    """A `should_stop` that says yes at the `steps`-th call."""
    calls = itertools.count(1)
    return lambda: next(calls) >= steps


def fastest_config(data: Dataset, batch_sizes: tuple[int, ...] = (128, 256, 512),
                   precisions: tuple[str, ...] = ("fp32", "bf16"),
                   ) -> list[tuple[TrainConfig, float]]:
    """examples/s of lenet5 for each batch size and precision, fastest first. The learning
    rate grows with the batch (0.1 x batch/128), the usual linear scaling."""
    results = []
    for batch in batch_sizes:
        for precision in precisions:
            config = TrainConfig(batch_size=batch, precision=precision, lr=0.1 * batch / 128,
                                 device="cpu")
            steps = max(40, 15_000 // batch)
            results.append((config, steps_per_second(data, config, steps=steps)))
    return sorted(results, key=lambda r: -r[1])


def accuracy_after(config: TrainConfig) -> tuple[float, float]:
    """(final test accuracy, training examples/s) of a `lenet train` run of `config`."""
    from ..run import shortcuts as runner
    from ..run.console import Console

    with tempfile.TemporaryDirectory() as out:
        result = runner.train(config.replace(out_dir=out, name="bench"),
                              console=Console(progress=False, stream=io.StringIO()))
    return result.history[-1]["test_acc"], result.examples_per_sec


def matmul_gflops(dtype: torch.dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of an n x n matrix multiply in `dtype` on the CPU."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        calls += 1
    return 2 * n**3 * calls / (time.perf_counter() - start) / 1e9


@dataclass(frozen=True)
class TimeToAccuracy:
    seconds: float | None  # from launch until the epoch line that first shows the target
    command_seconds: float  # the whole command, its final plot and files included
    epochs: int
    accuracy: float
    command: list[str]


def time_to_accuracy(args: list[str], target: float = 0.90) -> TimeToAccuracy:
    """Run `lenet train ARGS --target-accuracy TARGET` as a fresh process (start-up and data
    loading included) and note when its epoch table first prints the target or more."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "lenet", "train", *args, "--target-accuracy",
                   str(target), "--out-dir", out, "--name", "t", "--no-progress"]
        reached = None
        start = time.perf_counter()
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as child:
            assert child.stdout is not None  # stdout=PIPE
            for line in child.stdout:
                if reached is None and _epoch_accuracy(line) >= target:
                    reached = time.perf_counter() - start
        command_seconds = time.perf_counter() - start
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, command)
        history = read_metrics(Path(out) / "t" / "metrics.csv")
    return TimeToAccuracy(reached, command_seconds, len(history), history[-1]["test_acc"],
                          ["lenet", "train", *args])


def _epoch_accuracy(line: str) -> float:
    """The test accuracy of a row of `lenet train`'s epoch table (epoch, train loss, train
    acc, test loss, test acc, ...), or -1 for any other line."""
    fields = line.split()
    try:
        return float(fields[4]) if len(fields) >= 7 and fields[0].isdigit() else -1.0
    except ValueError:
        return -1.0


@dataclass(frozen=True)
class InferenceSpeed:
    backend: str
    median_ms: float
    p99_ms: float
    batch_images_per_sec: float


def inference_speed(predictor: Predictor, images: np.ndarray, calls: int = 1000,
                    batch: int = 1024) -> InferenceSpeed:
    """Single-image latency (median, p99 over `calls`) and batch throughput."""
    one = images[0]
    for _ in range(50):
        predictor.logits_one(one)
    times = []
    for i in range(calls):
        image = images[i % len(images)]
        start = time.perf_counter()
        predictor.logits_one(image)
        times.append(time.perf_counter() - start)
    chunk = images[:batch]
    predictor.logits(chunk)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        predictor.logits(chunk)
        reps += 1
    rate = reps * len(chunk) / (time.perf_counter() - start)
    return InferenceSpeed(predictor.backend, 1e3 * statistics.median(times),
                          1e3 * float(np.percentile(times, 99)), rate)
