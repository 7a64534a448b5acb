import gzip

import numpy as np
import pytest

from lenet.data import idx
from lenet.errors import DataError


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_round_trip_raw_and_gzip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = idx.write(tmp_path / name, array)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")
    out = idx.read(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 7  # arrays we return are writable


def test_compression_is_detected_from_content_not_name(tmp_path):
    path = tmp_path / "labels-without-suffix"
    path.write_bytes(gzip.compress(idx.encode(np.array([1, 2, 3], dtype=np.uint8))))
    np.testing.assert_array_equal(idx.read(path), [1, 2, 3])


def test_other_dtypes_round_trip(tmp_path):
    array = np.array([[1.5, -2.0]], dtype=np.float32)
    np.testing.assert_array_equal(idx.read(idx.write(tmp_path / "f", array)), array)


def bad(tmp_path, data: bytes, name: str = "bad-idx1-ubyte"):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        idx.read(path)
    assert str(path) in str(info.value)  # every error names the file
    return str(info.value)


def test_empty_file(tmp_path):
    assert "too short" in bad(tmp_path, b"")


def test_bad_magic(tmp_path):
    assert "not an IDX file" in bad(tmp_path, b"\x12\x34\x08\x01" + b"\x00" * 8)


def test_unknown_type_code(tmp_path):
    assert "type code 0x07" in bad(tmp_path, b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")


def test_truncated_header(tmp_path):
    assert "header" in bad(tmp_path, b"\x00\x00\x08\x03\x00\x00\x00\x02")


def test_truncated_data(tmp_path):
    data = idx.encode(np.zeros((10, 28, 28), dtype=np.uint8))
    message = bad(tmp_path, data[:-100])
    assert "truncated" in message and "(10, 28, 28)" in message


def test_trailing_bytes(tmp_path):
    data = idx.encode(np.zeros(5, dtype=np.uint8))
    assert "unexpected bytes" in bad(tmp_path, data + b"junk")


def test_truncated_gzip(tmp_path):
    data = gzip.compress(idx.encode(np.zeros((50, 28, 28), dtype=np.uint8)))
    assert "gzip" in bad(tmp_path, data[: len(data) // 2], "x.gz")


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(idx.encode(np.arange(1000, dtype=np.uint8) % 7)))
    data[20] ^= 0xFF
    assert "gzip" in bad(tmp_path, bytes(data), "x.gz")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        idx.read(tmp_path / "nope")
