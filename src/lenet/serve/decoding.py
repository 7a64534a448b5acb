"""Request bodies to model inputs: (28, 28) uint8 images as the dataset stores them.

A body is one of: an image in any format Pillow reads (PNG, JPEG, GIF, BMP, WebP,
PGM, ...), an NPY array, or an IDX array (the dataset's own format). The format is
read from the bytes, never from a name; nothing names a file on the server. Sizes
are checked before anything is decoded: an image's from its header
(decompression bombs), an array's from its header. Pictures are made to look like
the training data by `lenet.data.images` (grayscale, a light background inverted,
cropped, padded, resized), the same as `lenet predict`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..data import idx
from ..data.images import PREPARE as PREPARE  # the routes' prepare= choices (re-exported)
from ..data.images import (
    ImageError,
    ImageTooLarge,
    NotAnImage,
    decode_image,
    prepare_image,
)
from ..errors import DataError
from .limits import bad_request, too_large, unsupported

# Raw bodies are sniffed, so any of these content types will do; multipart is parsed.
RAW_TYPES = ("image/", "application/octet-stream", "application/x-npy", "application/npy",
             "application/x-idx")
FORMATS = "PNG, JPEG, GIF, BMP, WebP, PGM (any format Pillow reads), NPY or IDX"
NPY_MAGIC = b"\x93NUMPY"


@dataclass
class ModelInput:
    pixels: np.ndarray  # (H, W) uint8: what the model sees
    inverted: bool = False
    notes: list[str] = field(default_factory=list)
    original: np.ndarray | None = None  # the picture's own statistics (lenet.ood.photo_check)


def body_kind(content_type: str | None) -> str:
    """"multipart" or "raw" for a request's Content-Type; 415 for anything else."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return "multipart"
    if not kind or kind.startswith(RAW_TYPES):
        return "raw"
    raise unsupported(f"Content-Type {kind!r}: send the image as the raw body (Content-Type "
                      "image/..., application/octet-stream or application/x-npy) or as the "
                      "multipart/form-data field 'file'")


def sniff(data: bytes) -> str:
    if data.startswith(NPY_MAGIC):
        return "npy"
    if len(data) >= 4 and data[:2] == b"\0\0" and data[2] in idx.IDX_DTYPES and 1 <= data[3] <= 4:
        return "idx"
    return "image"


def read_array(data: bytes, kind: str, max_values: int, source: str) -> np.ndarray:
    """An NPY or IDX array, its shape checked against `max_values` before reading."""
    if kind == "idx":
        ndim = data[3]
        if len(data) < 4 + 4 * ndim:
            raise bad_request(f"{source}: truncated IDX header")
        dims = np.frombuffer(data, ">u4", count=ndim, offset=4).astype(np.int64)
        _check_values(int(np.prod(dims)), max_values, source, tuple(dims))
        try:
            return idx.parse(data, source)
        except DataError as e:
            raise bad_request(str(e)) from None
    f = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
    except (ValueError, OSError, SyntaxError) as e:
        raise bad_request(f"{source}: not a readable NPY header ({e})") from None
    if dtype.hasobject or dtype.kind not in "uif":
        raise unsupported(f"{source}: NPY arrays of {dtype} are not images; send uint8 "
                          "(0-255) or float (0-1)")
    count = int(np.prod(shape, dtype=np.int64))
    _check_values(count, max_values, source, shape)
    offset = f.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise bad_request(f"{source}: NPY data is {len(data) - offset:,} bytes, its header "
                          f"says {shape} {dtype} ({count * dtype.itemsize:,} bytes)")
    array = np.frombuffer(data, dtype, count, offset)
    return array.reshape(shape, order="F" if fortran else "C")


def _check_values(count: int, limit: int, source: str, shape: tuple[int, ...]) -> None:
    if count > limit:
        raise too_large(f"{source}: array of shape {tuple(int(s) for s in shape)} holds "
                        f"{count:,} values; the limit is {limit:,}")


def as_uint8(array: np.ndarray, source: str) -> np.ndarray:
    """uint8 pixels from uint8 (0-255) or float (0-1) values."""
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise bad_request(f"{source}: the array holds NaN or infinite values")
    if array.dtype.kind == "f":
        if values.min() < 0 or values.max() > 1:
            raise bad_request(f"{source}: float pixels must be in [0, 1]")
        values = values * 255
    elif values.min() < 0 or values.max() > 255:
        raise bad_request(f"{source}: integer pixels must be in [0, 255]")
    return np.round(values).astype(np.uint8)


class Decoder:
    """Bodies to model inputs of `size` (H, W) for a dataset whose objects fill `fill` of
    the frame (lenet.data.datasets)."""

    def __init__(self, size: tuple[int, int], fill: float, max_pixels: int) -> None:
        height, width = size  # a list when read from JSON
        self.size, self.fill, self.max_pixels = (height, width), fill, max_pixels

    def one(self, data: bytes, *, prepare: str = "auto", invert: bool | None = None,
            source: str = "body") -> ModelInput:
        """One image: a picture, or an NPY/IDX array (H, W), (1, H, W) or (1, 1, H, W)."""
        if not data:
            raise bad_request(f"{source}: empty; send an image ({FORMATS})")
        kind = sniff(data)
        if kind == "image":
            return self.picture(data, prepare, invert, source)
        array = read_array(data, kind, self.max_pixels, source)
        while array.ndim > 2 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 2:
            raise bad_request(f"{source}: one image is an array (H, W), got {array.shape}; "
                              "send several to /v1/predict/batch")
        pixels = as_uint8(array, source)
        if pixels.shape == self.size and prepare != "full" and not invert:
            return ModelInput(pixels)  # already as the dataset stores images
        return self.from_image(Image.fromarray(pixels), prepare, invert, [], source)

    def many(self, data: bytes, max_batch: int, source: str = "body") -> np.ndarray:
        """An NPY/IDX array of N images (N, H, W) or (N, 1, H, W), as the dataset stores them."""
        if not data:
            raise bad_request(f"{source}: empty; send an NPY or IDX array (N, "
                              f"{self.size[0]}, {self.size[1]}) or multipart files")
        kind = sniff(data)
        if kind == "image":
            raise unsupported(f"{source}: a batch body is an NPY or IDX array (N, "
                              f"{self.size[0]}, {self.size[1]}); send pictures as "
                              "multipart files")
        per_image = self.size[0] * self.size[1]
        array = read_array(data, kind, max_batch * per_image, source)
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 3 or array.shape[1:] != self.size:
            raise bad_request(f"{source}: expected an array (N, {self.size[0]}, "
                              f"{self.size[1]}), got {array.shape}")
        if len(array) > max_batch:
            raise too_large(f"{source}: {len(array):,} images; the limit is {max_batch:,}")
        return as_uint8(array, source)

    def picture(self, data: bytes, prepare: str, invert: bool | None,
                source: str) -> ModelInput:
        try:
            image, notes = decode_image(data, source=source, max_pixels=self.max_pixels)
        except ImageTooLarge as e:
            raise too_large(str(e)) from None
        except NotAnImage as e:
            raise unsupported(f"{e}; send {FORMATS}") from None
        except ImageError as e:
            raise bad_request(str(e)) from None
        return self.from_image(image, prepare, invert, notes, source)

    def from_image(self, image: Image.Image, prepare: str, invert: bool | None,
                   notes: list[str], source: str) -> ModelInput:
        """`prepare`: "auto" is the one rule `lenet predict` and `Run.classify` follow
        (lenet.data.images.prepare_image: a model-sized picture is never cropped or
        resized, one that looks like the data is taken as it is); "full" crops, pads and
        resizes every picture; "none" takes pictures of the model's size only."""
        try:
            prepared = prepare_image(image, size=self.size, invert=invert, fill=self.fill,
                                     notes=notes, mode=prepare)
        except ImageError as e:
            if prepare == "none":
                raise bad_request(f"{source}: prepare=none: {e}") from None
            raise bad_request(f"{source}: {e}") from None
        except (OSError, ValueError) as e:  # a mode Pillow cannot convert, a broken palette
            raise bad_request(f"{source}: cannot convert this image ({e})") from None
        return ModelInput(prepared.pixels, prepared.inverted, prepared.notes, prepared.original)
