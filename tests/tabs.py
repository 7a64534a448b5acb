"""Helpers for the tests of the chapter's JAX and TensorFlow tabs (lenet.d2l.jax, .tensorflow)."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import numpy as np


def modules_after(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of `names` are in sys.modules after running `code` in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint(' '.join(n for n in {names!r} if n in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def synthetic_data(d2l: ModuleType) -> type:
    """A tab's `d2l.DataModule` of learnable 28x28 images (a bright square per class), NHWC,
    through the book's get_tensorloader: 256 to train on, 64 to validate."""
    from conftest import synthetic_split

    class Synthetic(d2l.DataModule):
        def __init__(self, batch_size: int = 32) -> None:
            super().__init__()
            self.save_hyperparameters()
            images, labels = synthetic_split(320, seed=0)
            self.X = images[..., None].astype(np.float32) / 255  # (N, 28, 28, 1)
            self.y = labels.astype(np.int32)

        def get_dataloader(self, train: bool):
            i = slice(0, 256) if train else slice(256, None)
            return self.get_tensorloader((self.X, self.y), train, i)

    return Synthetic
