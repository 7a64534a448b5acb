"""Fuzzing, the fast part: every parser of outside input (IDX files, images, --set, sweep
files, checkpoints) gives a correct result or a LenetError with a message, never another
exception. Targets and profiles: tests/fuzz_targets.py ("lenet-ci" derandomizes under $CI);
the deep run: benchmarks/fuzz.py. Below them, one test per crash the fuzzing found."""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pytest
import torch
from fuzz_targets import (
    GOOD_CHECKPOINT,
    TARGETS,
    check_checkpoint,
    check_image,
    check_sweep,
    profile,
)
from hypothesis import given, settings
from PIL import Image

from lenet.data import idx
from lenet.data.images import ImageError, decode_image, prepare_image, to_grayscale
from lenet.errors import ConfigError, DataError
from lenet.training import checkpoint

EXAMPLES = {"idx": 300, "image": 200, "set": 300, "sweep": 150, "checkpoint": 200}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz(name):
    strategy, check = TARGETS[name]
    given(strategy)(settings(profile(), max_examples=EXAMPLES[name])(check))()


# --- IDX ------------------------------------------------------------------------------------

def idx_header(code: int, *dims: int) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)


@pytest.mark.parametrize("data, message", [
    (idx_header(0x08, 2**32 - 1, 2**32 - 1, 0), "more than the"),  # holds 0 bytes, no shape
    (idx_header(0x0E, 2**31, 2**31, 0), "more than the"),
    (idx_header(0x08, *[1] * 9), "9 dimensions"),
    (idx_header(0x08, 3_000_000_000), "more than the"),
])
def test_idx_headers_claiming_too_much_are_refused(data, message):
    with pytest.raises(DataError, match=message):
        idx.parse(data)


def test_a_gzip_bomb_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, 3_000_000_000) + b"\0" * 1_000_000))
    with pytest.raises(DataError, match=r"bomb\.gz: header says"):
        idx.read(path)


def test_idx_extra_bytes_after_gzip_data_are_refused(tmp_path):
    path = tmp_path / "long.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, 2) + b"abc"))
    with pytest.raises(DataError, match="unexpected bytes"):
        idx.read(path)


# --- sweep files ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("name = 0\n[[runs]]\n", "name must be text"),
    ("out_dir = 0\n[[runs]]\n", "out_dir must be text"),
    ("[grid]\nlr = [0.1]\n[random]\n", "samples must be a whole number"),
    ('[grid]\nlr = [0.1]\n[random]\nsamples = []\n', "samples must be a whole number"),
    ('[grid]\nlr = [0.1]\n[random]\nsamples = 1\nseed = {}\n', "seed must be a whole number"),
    ('base = 5\n[[runs]]\n', "base must be a table"),
    ('runs = [1]\n', "runs must be tables"),
    ('[[runs]]\nbatch_size = ""\n', "batch_size must be a whole number"),
    ('[[runs]]\nepochs = ["../x", {}]\n', "epochs must be a whole number"),
    ('[[runs]]\nnesterov = 1\n', "nesterov must be true or false"),
    ("[grid]\n" + "".join(f'"set.k{i}" = [{", ".join(["1"] * 10)}]\n' for i in range(5)),
     "more than 10,000 combinations"),
])
def test_sweep_files_with_values_of_the_wrong_type_are_refused(tmp_path, text, message):
    from lenet.sweeps.spec import load_spec

    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_spec(tmp_path / "s.toml")


def test_a_sweep_file_that_is_not_utf8_is_refused(tmp_path):
    check_sweep("name = 'x'\n")
    from lenet.sweeps.spec import load_spec

    (tmp_path / "s.toml").write_bytes(b"name = '\xff'\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_spec(tmp_path / "s.toml")


# --- images ---------------------------------------------------------------------------------

def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


# Found by the fuzzing: Pillow's GIF reader raised struct.error on this file.
BROKEN_GIF = (b"GIF87a\x01\x00\x01\x00\x81\x00\x00===" + b"\x00" * 9 + b",\x00\x00\x00\x00\x01"
              b"\x00\x01\x00\x00\x08\x04\x00\x01\x04\x04\x00!\xf9\x04\x01\x00\x00\x01\x00,"
              b"\x00\x00\x00\x00")


# Found by benchmarks/fuzz.py: a WebP whose header claims 19 trillion pixels; measuring it
# for the message raised OSError (no decoder for that size).
HUGE_WEBP = (
    b"RIFFh\x00\x00\x00WEBPVP8XIFFh\x00\x00\x00WEBPVP8X\n\x00\x00\x00\x08\x00\x00\x00"
    b"\x00\x00\x00\x00\x00\x00VP8 (\x00\x00\x00p\x01\x00\x9d\x01*\x01\x00\x01\x00\x01@"
    b"&%\xa0\x02t\x01@\x00\x00\xfe\xf8\xf7\x87\xff^\x8f\xff\xf3\xd1\xff\xfez?\xcf\xcb"
    b"\xbd\x80\x01EXHF\x1b\x00\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03"
    b"\x00\x00\x00\x01\x00\x07\x00\x00\x00\x00\x01\x00"
)


def test_a_huge_webp_is_too_large_not_a_crash():
    with pytest.raises(ImageError, match="image too large"):
        decode_image(HUGE_WEBP)


def test_pillows_other_exceptions_on_broken_files_are_image_errors():
    with pytest.raises(ImageError, match="truncated or corrupt image data \\(error: unpack"):
        decode_image(BROKEN_GIF)


def test_16_bit_and_float_images_keep_their_range():
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    sixteen = Image.open(io.BytesIO(encode(Image.fromarray(ramp))))
    assert sixteen.mode == "I;16"
    gray = to_grayscale(sixteen)
    np.testing.assert_allclose(gray, ramp / 65535.0, atol=1e-6)  # Pillow's "L" clips at 255
    floats = Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4), "F")
    assert to_grayscale(floats).max() == pytest.approx(1.0)


def test_lab_images_become_grayscale():
    lab = Image.new("RGB", (5, 4), (200, 30, 60)).convert("LAB")
    assert to_grayscale(lab).shape == (4, 5)


def test_a_long_thin_strip_is_prepared_without_a_gigabyte_square():
    strip = Image.fromarray(np.full((1, 40_000), 255, dtype=np.uint8), "L")
    prepared = prepare_image(strip, invert=False)  # the square was 40,000^2 floats (6.4 GB)
    assert prepared.pixels.shape == (28, 28) and prepared.pixels.max() > 0


def test_exif_rotation_is_applied_and_a_broken_tag_ignored():
    tall = Image.new("L", (10, 30), 0)
    tall.paste(255, (0, 0, 10, 5))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    assert to_grayscale(Image.open(io.BytesIO(encode(tall, exif=exif)))).shape == (10, 30)
    exif[0x0112] = 9  # no such orientation
    assert to_grayscale(Image.open(io.BytesIO(encode(tall, exif=exif)))).shape == (30, 10)


@pytest.mark.parametrize("mode", ["1", "P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "LAB", "I", "F"])
def test_the_image_target_holds_for_odd_modes(mode):
    image = Image.new("RGB", (7, 3), (9, 200, 30)).convert(mode)
    fmt = "PNG" if mode in ("1", "P", "LA", "RGBA") else "TIFF"
    check_image(encode(image, fmt))
    assert prepare_image(image).pixels.shape == (28, 28)


# --- checkpoints ----------------------------------------------------------------------------

def test_a_checkpoint_whose_version_flips_to_1_is_still_checked(tmp_path):
    payload = torch.load(io.BytesIO(GOOD_CHECKPOINT), weights_only=True)
    payload["version"], payload["epoch"] = 1, 7  # as if a bit flipped in each
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(checkpoint.CorruptCheckpoint, match="checksum"):
        checkpoint.load(tmp_path / "c.pt")
    check_checkpoint(GOOD_CHECKPOINT)  # the unchanged file loads


def test_an_idx_header_that_lies_about_its_size_costs_no_memory(tmp_path):
    """Under a 1 GB address-space cap, a file claiming 1.9 GB of data is refused as truncated
    (one read(1.9 GB) would have been a MemoryError)."""
    import subprocess
    import sys

    path = tmp_path / "liar"
    path.write_bytes(idx_header(0x08, 1_900_000_000) + b"tiny")
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30)); "
              "from lenet.data import idx; from lenet.errors import DataError\n"
              "try: idx.read(sys.argv[1])\nexcept DataError as e: print(e)")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True)
    assert "truncated: header says (1900000000,)" in out.stdout, out.stderr
