"""Shared fixtures: small synthetic IDX datasets that tests write themselves."""

from __future__ import annotations

import gzip
import importlib
import os
from pathlib import Path

import numpy as np
import pytest

from lenet.cli import main
from lenet.data import datasets, idx
from lenet.run.console import Console
from lenet.run.shortcuts import StopRequest

SYNTHETIC_CLASSES = tuple(f"class{k}" for k in range(10))


QUIET = Console(progress=False)  # a run's console with no bar: tests read its files


def lenet_cli(capsys, *argv) -> tuple[int, str, str]:
    """`lenet ARGV...` in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def kernel_built() -> bool:
    """Whether the fused kernel built here; CI installs gcc, so there it must have."""
    from lenet.native import lenet5

    built = lenet5.available()
    assert built or not os.environ.get("CI"), "the fused kernel did not build under CI"
    return built


def require(module: str):
    """Import an optional part the tests use: CI installs it, so there a missing one fails;
    elsewhere the test is skipped."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


def synthetic_split(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 images: class k is a bright 6x6 square at a k-dependent spot, plus noise."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, size, size), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = 2 + 6 * (k // 4), 2 + 6 * (k % 4)
        images[i, r:r + 6, c:c + 6] = 230
    return images, labels


def write_dataset(directory: Path, *, n_train: int = 200, n_test: int = 100, seed: int = 0,
                  compress: bool = True) -> dict[str, np.ndarray]:
    """Write the four MNIST-style IDX files into `directory`; return the arrays by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    train, test = synthetic_split(n_train, seed), synthetic_split(n_test, seed + 1)
    arrays = {
        "train-images-idx3-ubyte": train[0], "train-labels-idx1-ubyte": train[1],
        "t10k-images-idx3-ubyte": test[0], "t10k-labels-idx1-ubyte": test[1],
    }
    for name, array in arrays.items():
        idx.write(directory / (name + (".gz" if compress else "")), array)
    return arrays


def spec_for(arrays: dict[str, np.ndarray], name: str = "synthetic",
             mirrors: tuple[str, ...] = ()) -> datasets.DatasetSpec:
    """A DatasetSpec whose digests match `arrays` (gz digests as `gzip.compress(mtime=0)`)."""
    def file(fname: str) -> datasets.IDXFile:
        raw = idx.encode(arrays[fname])
        return datasets.IDXFile(fname, datasets.md5_hex(raw),
                                datasets.md5_hex(gzip.compress(raw, mtime=0)))

    return datasets.DatasetSpec(
        name=name, title=name.capitalize(), classes=SYNTHETIC_CLASSES,
        files={"train": (file("train-images-idx3-ubyte"), file("train-labels-idx1-ubyte")),
               "test": (file("t10k-images-idx3-ubyte"), file("t10k-labels-idx1-ubyte"))},
        mirrors=mirrors, how_to_get="write it yourself")


@pytest.fixture
def isolated_sources(tmp_path, monkeypatch):
    """No real data source leaks in: empty cache, no env var, no Debian directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LENET_DATA_DIR", raising=False)
    monkeypatch.delenv("LENET_DATA_MIRROR", raising=False)
    monkeypatch.setattr("lenet.data.sources.DEBIAN_DATASETS", tmp_path / "debian")
    return tmp_path


@pytest.fixture
def synthetic(isolated_sources, monkeypatch):
    """A registered dataset named 'synthetic' in $LENET_DATA_DIR: returns its directory."""
    directory = isolated_sources / "synthetic-data"
    arrays = write_dataset(directory)
    monkeypatch.setitem(datasets.DATASETS, "synthetic", spec_for(arrays))
    monkeypatch.setenv("LENET_DATA_DIR", str(directory))
    return directory


@pytest.fixture(scope="session")
def served_run(tmp_path_factory):
    """A small trained run for lenet serve's tests, made once per session (tests/serving.py)."""
    from serving import train_served_run

    return train_served_run(tmp_path_factory.mktemp("serve"))


class StopAfter(StopRequest):
    """Asks a run to stop once `steps` training steps have run (like a Ctrl-C there)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def __call__(self) -> bool:
        self.steps -= 1
        self.requested = self.requested or self.steps <= 0
        return self.requested


# The fast loop (`make test-fast`, `-m "not slow"`) stays fast only if slow tests are marked:
# list, after a run, the unmarked tests whose call took longer than this (on 2 cores). Only
# a note, never a failure: timings on a shared machine are noisy.
SLOW_TEST_S = 2.0
_unmarked_slow: list[tuple[float, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > SLOW_TEST_S and "slow" not in report.keywords:
        _unmarked_slow.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter) -> None:
    if _unmarked_slow:
        terminalreporter.section("slow tests without @pytest.mark.slow")
        for seconds, nodeid in sorted(_unmarked_slow, reverse=True):
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")
