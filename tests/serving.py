"""What the `lenet serve` tests share: a small trained run, made once per session (the
fixture `served_run` in conftest.py), and a real `lenet serve` subprocess on a free port.

The run is lenet5-modern trained for 2 epochs on the synthetic squares of conftest.py,
its dataset a directory of IDX files (a dataset lenet reads by path), so a server
in another process finds its test split too (the page's "random test image").
Training it takes about 3 s on 2 cores; its out-of-distribution detectors are fitted
at the end of training, on 40 training images kept out.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from conftest import SYNTHETIC_CLASSES, write_dataset
from PIL import Image

import lenet
from lenet.run.console import Console
from lenet.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import serve_load  # noqa: E402  (benchmarks/serve_load.py: the server launcher, the client)


def train_served_run(root: Path) -> Path:
    """A trained run directory (synthetic squares, 10 classes) under `root` (conftest.py's
    session fixture `served_run`)."""
    data = root / "squares"
    write_dataset(data)
    (data / "classes.txt").write_text("\n".join(SYNTHETIC_CLASSES) + "\n")
    config = TrainConfig(dataset=str(data), model="lenet5-modern", optimizer="adam", lr=0.01,
                         batch_size=32, epochs=2, out_dir=str(root / "runs"), name="squares",
                         device="cpu", seed=1, ood_holdout=40)
    return lenet.Run.create(config).fit(console=Console(progress=False)).run_dir


def png(pixels: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def confident_test_image(run_dir: Path) -> tuple[np.ndarray, str]:
    """The test image the model is surest of, among those it gets right, and its label."""
    run = lenet.Run.open(run_dir)
    test = run.dataset.test
    predictions = run.classify(test.images, ood=False)
    right = [(p.probability, i) for i, p in enumerate(predictions)
             if p.index == test.labels[i]]
    _, best = max(right)
    return test.images[best], run.classes[test.labels[best]]


class Server:
    """`lenet serve RUN --port PORT ...` in a subprocess, ready (GET /readyz is 200)."""

    def __init__(self, run_dir: Path, *args: str) -> None:
        self.port = serve_load.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "lenet", "serve", str(run_dir), "--port",
                   str(self.port), *args]
        self.process = serve_load.start_server(command, self.port)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> str:
        """Its standard error, once stopped."""
        return serve_load.stop_server(self.process)
