"""Fuzz targets for the parsers that read what users and other people's files give lenet.

Each target is a hypothesis strategy of inputs and a `check_*` function: the only outcomes
allowed are a correct result (checked) or a LenetError with a message; anything else (another
exception, a hang past the deadline) fails. tests/test_fuzz.py runs them briefly in `make
test`; benchmarks/fuzz.py runs them for many more examples.

Profiles: "lenet-dev" (random, the default), "lenet-ci" (derandomize: CI is deterministic,
chosen when $CI is set), "lenet-deep" (benchmarks/fuzz.py).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st
from PIL import Image

from lenet.data import idx
from lenet.data.images import decode_image, prepare_image
from lenet.errors import LenetError
from lenet.models.config import MODELS
from lenet.models.network import LeNet
from lenet.models.settings import ModelSettings, parse_settings, resolve_model_config, setting_names
from lenet.sweeps.spec import load_spec
from lenet.training import checkpoint

QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("lenet-dev", deadline=None, suppress_health_check=QUIET,
                          print_blob=True)
settings.register_profile("lenet-ci", deadline=None, suppress_health_check=QUIET,
                          derandomize=True, database=None, print_blob=True)
settings.register_profile("lenet-deep", deadline=None, suppress_health_check=QUIET,
                          database=None, verbosity=Verbosity.quiet)


def profile() -> settings:
    return settings.get_profile(os.environ.get("LENET_HYPOTHESIS_PROFILE")
                                or ("lenet-ci" if os.environ.get("CI") else "lenet-dev"))


def expect_lenet_error(call, *args):
    """call(*args); returns its result, or None when it raised a LenetError with a message."""
    try:
        return call(*args)
    except LenetError as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        return None


# --- IDX ------------------------------------------------------------------------------------

@st.composite
def idx_files(draw: st.DrawFn) -> bytes:
    """IDX bytes: mostly well-formed headers, with random magic, dtypes, dimensions (some
    huge), data that is short, exact or long, sometimes gzipped or cut."""
    magic = draw(st.sampled_from([b"\0\0", b"\0\0", b"\0\0", b"\x1f\x8b", b"\0\x01"]))
    code = draw(st.sampled_from([*idx.IDX_DTYPES, 0x00, 0x0A, 0xFF]))
    ndim = draw(st.integers(0, 10) | st.sampled_from([1, 3, 3, 255]))
    dims = draw(st.lists(st.integers(0, 6) | st.sampled_from([2**31, 2**32 - 1, 65536]),
                         min_size=min(ndim, 12), max_size=min(ndim, 12)))
    header = magic + bytes([code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    itemsize = idx.IDX_DTYPES[code].itemsize if code in idx.IDX_DTYPES else 1
    size = 1
    for d in dims:
        size *= d
    exact = size * itemsize if size * itemsize < 5000 else draw(st.integers(0, 64))
    length = draw(st.sampled_from([exact, exact, max(0, exact - 1), exact + 1])
                  | st.integers(0, 200))
    data = header + draw(st.binary(min_size=length, max_size=length))
    cut = draw(st.none() | st.integers(0, len(data)))
    data = data if cut is None else data[:cut]
    if draw(st.booleans()):
        data = gzip.compress(data, mtime=0)
        if draw(st.booleans()):
            data = data[:draw(st.integers(0, len(data)))]
    return data


def check_idx(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".idx") as f:
        f.write(data)
        f.flush()
        array = expect_lenet_error(idx.read, f.name)
    if array is not None:
        raw = gzip.decompress(data) if data[:2] == idx.GZIP_MAGIC else data
        assert array.shape == tuple(struct.unpack(f">{raw[3]}I", raw[4:4 + 4 * raw[3]]))
        assert idx.encode(array)[4 + 4 * raw[3]:] == raw[4 + 4 * raw[3]:]


# --- images ---------------------------------------------------------------------------------

MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "I", "I;16", "I;16B", "F", "CMYK", "YCbCr",
         "LAB", "HSV", "RGBX", "La", "RGBa"]
FORMATS = ["PNG", "GIF", "TIFF", "WEBP", "JPEG", "BMP"]


@st.composite
def image_files(draw: st.DrawFn) -> bytes:
    """Image bytes: valid images in odd modes and sizes (16-bit, alpha, palettes, extreme
    aspect ratios), with EXIF orientations, animated, then sometimes cut or bit-flipped;
    or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    mode = draw(st.sampled_from(MODES))
    w, h = draw(st.sampled_from([(1, 1), (2, 3), (28, 28), (1, 300), (300, 1), (40, 17)])
                | st.tuples(st.integers(1, 64), st.integers(1, 64)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        try:
            frames.append(rgb.convert(mode))
        except ValueError:
            frames.append(Image.new(mode, (w, h)))
    fmt = draw(st.sampled_from(FORMATS))
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = draw(st.integers(0, 9))  # orientation: 1-8 valid, others odd
    try:
        frames[0].save(out, format=fmt, save_all=len(frames) > 1,
                       append_images=frames[1:], exif=exif)
    except (OSError, ValueError, TypeError, KeyError):
        out = io.BytesIO()
        Image.new("L", (w, h), 200).save(out, format="PNG")
    data = out.getvalue()
    damage = draw(st.sampled_from(["none", "none", "cut", "flip"]))
    if damage == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif damage == "flip" and data:
        flips = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)),
                              min_size=1, max_size=4))
        buffer = bytearray(data)
        for at, bit in flips:
            buffer[at] ^= 1 << bit
        data = bytes(buffer)
    return data


def check_image(data: bytes) -> None:
    decoded = expect_lenet_error(decode_image, data)
    if decoded is None:
        return
    prepared = expect_lenet_error(prepare_image, decoded[0])
    if prepared is not None:
        assert prepared.pixels.shape == (28, 28) and prepared.pixels.dtype == np.uint8


# --- --set and sweep files ------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
SET_VALUES = (TEXT | st.integers(-5, 300).map(str) | st.sampled_from(
    ["relu", "max", "same", "true", "16,32", "3x5", "", ",", "1e400", "nan", "-0", "0.5",
     "99999999999999999999", "1,2,3,4,5,6,7,8,9", "same,2"]))
SET_ITEMS = st.lists(st.tuples(st.sampled_from(setting_names()) | TEXT, st.sampled_from(["=", ""]),
                               SET_VALUES).map("".join), max_size=5)


def check_set(items: list[str]) -> None:
    settings_ = expect_lenet_error(parse_settings, items)
    if settings_ is None:
        return
    assert isinstance(settings_, ModelSettings)
    assert ModelSettings.from_dict(settings_.to_dict()) == settings_  # round trip
    for model in MODELS:
        expect_lenet_error(resolve_model_config, model, settings_)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value), repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


OPTION_KEYS = st.sampled_from(["epochs", "lr", "batch_size", "batch-size", "model", "optimizer",
                               "seed", "resize", "augment", "dataset", "schedule", "momentum",
                               "set.activation", "set.channels", "set.kernel", "set.dropout",
                               "name", "out_dir", "samples"]) | TEXT
SCALARS = (st.integers(-3, 300) | st.floats(allow_nan=True) | st.booleans() | TEXT
           | st.sampled_from(["relu", "lenet5", "sgd", "16,32", "flip", "../x", "a/b", ".."]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(TEXT, inner, max_size=2), max_leaves=6)
TABLE = st.dictionaries(OPTION_KEYS, VALUES, max_size=4)


@st.composite
def sweep_files(draw: st.DrawFn) -> str:
    """Sweep TOML: the top-level keys and tables lenet reads, with values of any type."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))
    lines = []
    for key in draw(st.lists(st.sampled_from(["name", "out_dir"]), unique=True)):
        lines.append(f"{key} = {_toml_value(draw(VALUES))}")
    for table in draw(st.lists(st.sampled_from(["base", "grid", "random"]), unique=True)):
        lines.append(f"[{table}]")
        if table == "grid":
            content = draw(st.dictionaries(OPTION_KEYS, st.lists(SCALARS, max_size=3) | VALUES,
                                           max_size=3))
        elif table == "random":
            content = draw(st.dictionaries(st.sampled_from(["samples", "seed"]) | TEXT, VALUES,
                                           max_size=2))
        else:
            content = draw(TABLE)
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in content.items()]
    for extra in draw(st.lists(TABLE, max_size=3)):
        lines.append("[[runs]]")
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def check_sweep(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sweep.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        spec = expect_lenet_error(load_spec, path)
    if spec is not None:
        name, out, runs = spec
        assert out.name == name and ".." not in name and "/" not in name
        assert runs and len({r.name for r in runs}) == len(runs)
        for run in runs:
            assert (out / run.name).parent == out  # never outside the sweep directory


# --- checkpoints ----------------------------------------------------------------------------

def _good_checkpoint() -> bytes:
    config = resolve_model_config("lenet5")
    torch.manual_seed(0)
    model = LeNet(config)
    with tempfile.TemporaryDirectory() as d:
        path = checkpoint.save(Path(d) / "checkpoint.pt", {
            "model_config": config.to_dict(), "model_state": model.state_dict(), "epoch": 1,
            "history": [{"epoch": 1, "test_acc": 0.5}]})
        return path.read_bytes()


GOOD_CHECKPOINT = _good_checkpoint()


@st.composite
def checkpoint_files(draw: st.DrawFn) -> bytes:
    """A good checkpoint, cut, bit-flipped or overwritten in places; or random bytes."""
    data = bytearray(GOOD_CHECKPOINT)
    how = draw(st.sampled_from(["cut", "flip", "flip", "overwrite", "random"]))
    if how == "random":
        return draw(st.binary(max_size=2048))
    if how == "cut":
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        if how == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            patch = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(patch)] = patch
    return bytes(data)


def check_checkpoint(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "checkpoint.pt"
        path.write_bytes(data)
        payload = expect_lenet_error(checkpoint.load, path)
    if payload is not None:  # only an unchanged content may load
        good = torch.load(io.BytesIO(GOOD_CHECKPOINT), weights_only=True)
        assert checkpoint.digest(payload) == checkpoint.digest(good)
        checkpoint.model_from_payload(payload)


TARGETS = {
    "idx": (idx_files(), check_idx),
    "image": (image_files(), check_image),
    "set": (SET_ITEMS, check_set),
    "sweep": (sweep_files(), check_sweep),
    "checkpoint": (checkpoint_files(), check_checkpoint),
}
