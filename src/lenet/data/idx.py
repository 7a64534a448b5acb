"""The IDX file format of MNIST and Fashion-MNIST, read and written with NumPy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data in C order.
Files may be gzip-compressed; compression is detected from the content, not the
file name. Every inconsistency raises `DataError` naming the file.
"""

from __future__ import annotations

import gzip
import io
import math
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
# Files from elsewhere are read with these bounds, checked on the header before any large
# allocation: the largest MNIST-family file (EMNIST ByClass, 0.55 GB) fits with room.
MAX_DATA_BYTES = 2**31
MAX_DIMS = 8  # IDX datasets use 1 (labels) to 4


def read_bytes(path: str | Path) -> bytes:
    """The IDX bytes of `path`, decompressed if the file is gzip data. The header is read
    first, so a file that claims more data than MAX_DATA_BYTES (a gzip bomb, a forged
    header) is refused before its data is read or decompressed."""
    path, compressed = Path(path), False
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            try:
                return _read_bounded(stream, path)
            except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from e
            finally:
                if compressed:
                    stream.close()
    except DataError:
        raise
    except OSError as e:
        kind = "corrupt or truncated gzip data" if compressed else "cannot read"
        raise DataError(f"{path}: {kind} ({e.strerror or e})") from e


def _read_bounded(stream: io.BufferedIOBase, source: Path) -> bytes:
    head = stream.read(4)
    if len(head) == 4 and head[:2] == b"\0\0":
        head += stream.read(4 * head[3])
    try:
        _, _, header_size, expected = header(head, source)
    except DataError as e:
        if "truncated" not in str(e):  # the whole (short) file says more, in parse
            raise
        return head
    data = head + _read_upto(stream, expected + 1)  # bounded by the checked header
    if len(data) > header_size + expected:
        raise DataError(f"{source}: unexpected bytes after the data (its header says "
                        f"{expected:,} bytes)")
    return data


def _read_upto(stream: io.BufferedIOBase, n: int, chunk: int = 1 << 24) -> bytes:
    """At most `n` bytes, read in chunks: a header that lies about the size costs no more
    memory than the data that is really there (one read(n) would allocate n)."""
    parts, total = [], 0
    while total < n:
        part = stream.read(min(chunk, n - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
    return b"".join(parts)


def header(data: bytes, source: str | Path = "<bytes>") -> tuple[np.dtype, tuple[int, ...],
                                                                  int, int]:
    """(dtype, shape, header size, data size in bytes) from the start of IDX bytes, checked:
    magic, type code, 1 to MAX_DIMS dimensions, at most MAX_DATA_BYTES of data."""
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
    if ndim > MAX_DIMS:
        raise DataError(f"{source}: IDX header declares {ndim} dimensions (at most "
                        f"{MAX_DIMS} are read)")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{source}: truncated inside the header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    # (0, 2**32, 2**32) holds nothing, yet no array has that shape: the sizes bound too
    if math.prod(max(d, 1) for d in shape) * dtype.itemsize > MAX_DATA_BYTES:
        raise DataError(f"{source}: header says {shape} ({expected:,} bytes of data), more "
                        f"than the {MAX_DATA_BYTES:,} bytes lenet reads from an IDX file")
    return dtype, shape, header_size, expected


def parse(data: bytes, source: str | Path = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array, checking the header against the data size."""
    dtype, shape, header_size, expected = header(data, source)
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
