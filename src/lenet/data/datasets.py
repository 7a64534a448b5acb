"""Datasets known by name: their files, checksums, class names and official URLs.

Each file carries two digests: the MD5 of its *decompressed* IDX bytes, which
is the same whatever the compression (Debian re-compresses the Fashion-MNIST
files, so their `.gz` digests differ from the official ones although the data
are identical), and the MD5 of the official `.gz`, checked on download.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

SPLITS = ("train", "test")


def evaluation_split(val_split: float | None) -> str:
    """The name of the split a run evaluates on: "test" (the official test split, as the
    book), or "val" when a fraction of train is held out. Metrics are named after it
    (`test_acc`, `val_acc`)."""
    return "val" if val_split else "test"


@dataclass(frozen=True)
class IDXFile:
    """One file of a dataset, with the digests that identify its content."""

    name: str  # without .gz, e.g. "train-images-idx3-ubyte"
    raw_md5: str | None = None  # MD5 of the decompressed IDX bytes (None: a user's own data)
    gz_md5: str | None = None  # MD5 of the official .gz download

    @property
    def gz_name(self) -> str:
        return self.name + ".gz"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset of 28x28 grayscale images in IDX files."""

    name: str
    title: str
    classes: tuple[str, ...]
    files: dict[str, tuple[IDXFile, IDXFile]]  # split -> (images, labels)
    mirrors: tuple[str, ...]  # base URLs holding the official .gz files
    how_to_get: str
    reference: str = ""
    object_fill: float = 1.0  # how much of the frame an object's longer side takes


    def all_files(self) -> list[IDXFile]:
        return [f for split in SPLITS for f in self.files[split]]


def _mnist_style_files(digests: dict[str, tuple[str, str]]) -> dict[str, tuple[IDXFile, IDXFile]]:
    def file(name: str) -> IDXFile:
        return IDXFile(name, *digests[name])

    return {
        "train": (file("train-images-idx3-ubyte"), file("train-labels-idx1-ubyte")),
        "test": (file("t10k-images-idx3-ubyte"), file("t10k-labels-idx1-ubyte")),
    }


FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    classes=(
        "t-shirt/top", "trouser", "pullover", "dress", "coat",
        "sandal", "shirt", "sneaker", "bag", "ankle boot",
    ),
    # (MD5 of decompressed bytes, MD5 of the official .gz): Fashion-MNIST's README.
    files=_mnist_style_files({
        "train-images-idx3-ubyte": (
            "f4a8712d7a061bf5bd6d2ca38dc4d50a", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte": (
            "9018921c3c673c538a1fc5bad174d6f9", "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte": (
            "8181f5470baa50b63fa0f6fddb340f0a", "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte": (
            "15d484375f8d13e6eb1aabb0c3f46965", "bb300cfdad3c16e7a12a480ee83cd310"),
    }),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    how_to_get="on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist",
    reference="Xiao, Rasul & Vollgraf (2017), arXiv:1708.07747",
)

MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    classes=tuple(str(d) for d in range(10)),
    files=_mnist_style_files({
        "train-images-idx3-ubyte": (
            "6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte": (
            "a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte": (
            "2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte": (
            "27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c"),
    }),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    how_to_get="download the four .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/",
    reference="LeCun et al. (1998): LeNet-5 reaches 0.95% test error",
    object_fill=20 / 28,  # digits were fitted into a 20x20 box, centred in 28x28
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (FASHION_MNIST, MNIST)}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise DataError(f"unknown dataset {name!r}; known datasets: {known}") from None


def cache_dir(spec: DatasetSpec) -> Path:
    """The user cache for `spec`: $XDG_CACHE_HOME/lenet/<name> (default ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lenet" / spec.name


def find_file(directory: Path, file: IDXFile) -> Path | None:
    """The path of `file` in `directory`, gzipped or raw, if present."""
    for candidate in (directory / file.gz_name, directory / file.name):
        if candidate.is_file():
            return candidate
    return None


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
