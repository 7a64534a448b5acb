"""The IDX file format of MNIST and Fashion-MNIST, read and written with NumPy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data in C order.
Files may be gzip-compressed; compression is detected from the content, not the
file name. Every inconsistency raises `DataError` naming the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# IDX type code -> big-endian NumPy dtype (from LeCun's format description).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | Path) -> bytes:
    """The IDX bytes of `path`, decompressed if the file is gzip data."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from e


def parse(data: bytes, source: str | Path = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array, checking the header against the data size."""
    if len(data) < 4:
        raise DataError(f"{source}: truncated: {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{source}: not an IDX file (magic number starts {data[:2].hex()}, expected 0000)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise DataError(f"{source}: unknown IDX data type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares zero dimensions")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{source}: truncated inside the header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header_size
    if found < expected:
        raise DataError(
            f"{source}: truncated: header says {shape} ({expected:,} bytes of data), "
            f"file holds {found:,}"
        )
    if found > expected:
        raise DataError(
            f"{source}: {found - expected:,} unexpected bytes after the data "
            f"(header says {shape})"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def read(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a NumPy array."""
    return parse(read_bytes(path), source=path)


def encode(array: np.ndarray) -> bytes:
    """IDX bytes for `array` (the inverse of `parse`)."""
    array = np.asarray(array)
    for code, dtype in IDX_DTYPES.items():
        if dtype.kind == array.dtype.kind and dtype.itemsize == array.dtype.itemsize:
            header = bytes([0, 0, code, array.ndim])
            dims = np.asarray(array.shape, dtype=">u4").tobytes()
            return header + dims + array.astype(dtype, copy=False).tobytes()
    raise ValueError(f"IDX has no type for dtype {array.dtype}")


def write(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write `array` as an IDX file; gzip it when `compress` or the name ends in .gz."""
    path = Path(path)
    data = encode(array)
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path
