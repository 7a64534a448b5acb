"""Download a dataset's official .gz files into a directory, safely.

Each file goes to a temporary name beside its destination, is checked against
the official .gz MD5 and the MD5 of its decompressed bytes, and only then is
renamed into place (atomic on POSIX), so an interrupted or corrupt download
never looks like data.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ..base.atomic import atomic_path
from ..errors import DataError
from . import idx
from .datasets import DatasetSpec, IDXFile, find_file, md5_hex

CHUNK = 1 << 16
TIMEOUT_S = 30


def fetch(url: str, dest: Path, *, progress: bool = True) -> str:
    """Stream `url` into `dest`; return the MD5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "lenet"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, dest.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                  disable=not progress, leave=False) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def download_file(file: IDXFile, directory: Path, base_urls: Sequence[str], *,
                  progress: bool = True) -> Path:
    """Download one file from the first mirror that serves it intact."""
    dest = directory / file.gz_name
    errors = []
    for base in base_urls:
        url = base.rstrip("/") + "/" + file.gz_name
        try:
            with atomic_path(dest) as tmp:  # a file that fails a check never becomes `dest`
                gz_md5 = fetch(url, tmp, progress=progress)
                if gz_md5 != file.gz_md5:
                    raise DataError(f"checksum mismatch (MD5 {gz_md5}, expected {file.gz_md5})")
                raw_md5 = md5_hex(idx.read_bytes(tmp))
                if raw_md5 != file.raw_md5:
                    raise DataError(f"decompressed checksum mismatch (MD5 {raw_md5})")
            return dest
        except (OSError, urllib.error.URLError, DataError) as e:
            reason = getattr(e, "reason", None) or e
            errors.append(f"{url}: {reason}")
    raise DataError("could not download " + file.gz_name + ": " + "; ".join(errors))


def download_dataset(spec: DatasetSpec, directory: Path, base_urls: Sequence[str], *,
                     progress: bool = True) -> Path:
    """Download the files of `spec` missing from `directory`; return the directory."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {directory}: {e.strerror or e}") from e
    for file in spec.all_files():
        if find_file(directory, file) is None:
            if progress:
                tqdm.write(f"downloading {spec.title} {file.gz_name} into {directory}")
            download_file(file, directory, base_urls, progress=progress)
    return directory
