"""Where a dataset's files are found, and loading them verified into memory.

A *source* is a directory holding the four IDX files of a dataset (each raw or
gzipped). Sources are tried in order: `--data-dir`, `$LENET_DATA_DIR`, the user
cache, the Debian dataset package, then a download into the cache. Every file
is checked against the MD5 of its decompressed bytes each time it is loaded
(about 0.1 s for Fashion-MNIST), so a corrupt file never reaches training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import idx
from .datasets import (
    DATASETS,
    SPLITS,
    DatasetSpec,
    IDXFile,
    cache_dir,
    find_file,
    get_spec,
    md5_hex,
)
from .download import download_dataset

DEBIAN_DATASETS = Path("/usr/share/datasets")
DATA_DIR_ENV = "LENET_DATA_DIR"
MIRROR_ENV = "LENET_DATA_MIRROR"


@dataclass(frozen=True)
class Split:
    """One split in memory: images (N, H, W) uint8 and labels (N,) uint8."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    spec: DatasetSpec
    train: Split
    test: Split
    source: Path

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes


def candidate_dirs(spec: DatasetSpec, data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """(label, directory) pairs in the order they are searched."""
    candidates: list[tuple[str, Path]] = []
    explicit = (("--data-dir", data_dir), (f"${DATA_DIR_ENV}", os.environ.get(DATA_DIR_ENV)))
    for label, base in explicit:
        if base:
            # Accept the directory itself or a <dataset> folder inside it.
            candidates += [(label, Path(base)), (label, Path(base) / spec.name)]
    candidates.append(("user cache", cache_dir(spec)))
    candidates.append(("Debian package", DEBIAN_DATASETS / spec.name))
    return candidates


def load_file(path: Path, file: IDXFile, *, verify: bool = True) -> np.ndarray:
    """Read one IDX file, checking the digest of its decompressed bytes."""
    data = idx.read_bytes(path)
    if verify and file.raw_md5:
        digest = md5_hex(data)
        if digest != file.raw_md5:
            raise DataError(
                f"{path}: checksum mismatch (MD5 of the decompressed data is {digest}, "
                f"expected {file.raw_md5}); the file is corrupt or not the one expected. "
                "Delete it, or point --data-dir at a good copy."
            )
    return idx.parse(data, source=path)


def check_split(spec: DatasetSpec, split: str, images: np.ndarray, labels: np.ndarray,
                paths: Sequence[Path]) -> Split:
    """Check that images and labels of a split agree; return them as a Split."""
    image_path, label_path = paths
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{image_path}: expected uint8 images (N, H, W), found "
                        f"{images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{label_path}: expected uint8 labels (N,), found "
                        f"{labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{spec.name} {split}: {image_path.name} holds {len(images):,} images "
                        f"but {label_path.name} holds {len(labels):,} labels")
    if len(labels) and labels.max() >= len(spec.classes):
        raise DataError(f"{label_path}: label {labels.max()} out of range for "
                        f"{len(spec.classes)} classes")
    return Split(images, labels)


def load_from(spec: DatasetSpec, directory: Path, *, verify: bool = True) -> Dataset:
    """Load both splits of `spec` from one directory."""
    splits = {}
    for split in SPLITS:
        arrays, paths = [], []
        for file in spec.files[split]:
            path = find_file(directory, file)
            if path is None:
                raise DataError(f"{directory}: {file.name}[.gz] is missing")
            arrays.append(load_file(path, file, verify=verify))
            paths.append(path)
        images, labels = arrays  # spec.files holds (images, labels) per split
        splits[split] = check_split(spec, split, images, labels, paths)
    return Dataset(spec, splits["train"], splits["test"], directory)


def mirrors(spec: DatasetSpec) -> list[str]:
    """Base URLs to download from: $LENET_DATA_MIRROR (comma-separated) first."""
    extra = [u.strip() for u in os.environ.get(MIRROR_ENV, "").split(",") if u.strip()]
    return extra + list(spec.mirrors)


def locate(spec: DatasetSpec, data_dir: str | Path | None = None, *,
           download: bool = True) -> Path:
    """The first directory that holds all files of `spec`, downloading if needed."""
    looked = []
    for label, directory in candidate_dirs(spec, data_dir):
        present = [f.name for f in spec.all_files() if find_file(directory, f)]
        if len(present) == len(spec.all_files()):
            return directory
        state = "missing" if not present else f"only {len(present)} of 4 files"
        looked.append(f"  {label}: {directory} ({state})")
    if download:
        try:
            return download_dataset(spec, cache_dir(spec), mirrors(spec))
        except DataError as e:
            looked.append(f"  download: {e}")
    else:
        looked.append("  download: not attempted (offline)")
    names = ", ".join(f.gz_name for f in spec.all_files())
    raise DataError(
        f"{spec.title} was not found. Looked in:\n" + "\n".join(looked) + "\n"
        f"To get it: {spec.how_to_get}; or put the four IDX files ({names}, raw or gzipped) "
        f"in a directory and pass --data-dir DIR or set ${DATA_DIR_ENV}."
    )


def directory_spec(directory: Path) -> DatasetSpec:
    """A dataset of the four MNIST-style IDX files in `directory` (no known checksums).

    Class names come from `classes.txt` (one per line) when present, else the
    labels' numbers.
    """
    template = get_spec("mnist")
    files = {split: (IDXFile(images.name), IDXFile(labels.name))
             for split, (images, labels) in template.files.items()}
    missing = [f.name for pair in files.values() for f in pair if not find_file(directory, f)]
    if missing:
        raise DataError(f"{directory}: missing {', '.join(missing)} (raw or .gz)")
    names_file = directory / "classes.txt"
    if names_file.is_file():
        classes = tuple(line.strip() for line in names_file.read_text().splitlines()
                        if line.strip())
    else:
        labels_path = find_file(directory, files["train"][1])
        assert labels_path is not None  # no file is missing: checked above
        labels = load_file(labels_path, files["train"][1])
        classes = tuple(str(i) for i in range(int(labels.max()) + 1 if len(labels) else 1))
    return DatasetSpec(name=str(directory), title=directory.name, classes=classes, files=files,
                       mirrors=(), how_to_get=f"put the four IDX files in {directory}")


def load(name: str = "fashion-mnist", data_dir: str | Path | None = None, *,
         download: bool = True) -> Dataset:
    """Load a dataset by name (or a directory of IDX files) from the first source that
    has it, verified."""
    if name not in DATASETS and Path(name).is_dir():
        return load_from(directory_spec(Path(name)), Path(name))
    spec = get_spec(name)
    return load_from(spec, locate(spec, data_dir, download=download))
