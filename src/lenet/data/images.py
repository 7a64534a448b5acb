"""Turning a user's picture into the kind of input the model was trained on.

Fashion-MNIST and MNIST images are 28x28 grayscale, a light object on a dark
background, the object filling the frame. `prepare_image` holds the one rule
every entry point follows (`lenet predict`, `Run.classify` on files, `lenet
serve`, the page):

- a picture of the model's size is never cropped or resized (that would only
  blur it): made grayscale, and inverted when its background is light; one
  that already looks like the data (grayscale, dark background) is taken
  exactly as it is, so a test image saved as a PNG gives the array's logits;
- any other picture is prepared fully: transparency composited onto white,
  grayscale, a light background (detected from the border; overridable)
  inverted, cropped to the object, padded to a square keeping the aspect
  ratio, resized with antialiasing; the original's own statistics (colour,
  background texture, how much of the frame the object fills:
  lenet.data.originals) go with it for the photo check.

Every way a file can be unusable raises `ImageError` with one clear line.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import LenetError
from .originals import original_statistics

MAX_PIXELS = 50_000_000  # refuse larger images (decompression bombs, accidental scans)
MAX_SIDE = 4096  # the padded square's side at most (64 MB of float32)


class ImageError(LenetError):
    """The data is an image, but a truncated or corrupt one (or the file is missing)."""


class NotAnImage(ImageError):
    """No image format Pillow reads: a text file, an archive, empty data."""


class ImageTooLarge(ImageError):
    """More pixels than allowed: refused from the header, before decoding."""


PREPARE = ("auto", "full", "none")  # how a picture is prepared (lenet serve's `prepare=`)


@dataclass
class PreparedImage:
    pixels: np.ndarray  # (H, W) uint8, the model's input
    inverted: bool
    notes: list[str] = field(default_factory=list)
    # lenet.data.originals.original_statistics of the picture before preparation; None when
    # it was taken as it is (it already looked like the data: nothing more to say about it)
    original: np.ndarray | None = None


def open_image(path: str | Path) -> tuple[Image.Image, list[str]]:
    """Open and fully decode the first frame of an image file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise NotAnImage(f"{path}: empty file (0 bytes)")
    return _decode(path, str(path), MAX_PIXELS)


def decode_image(data: bytes, *, source: str = "<upload>",
                 max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, list[str]]:
    """Decode image bytes (any format Pillow reads) like `open_image`: the size is checked
    from the header before any pixel is decoded (`ImageTooLarge`); `NotAnImage` when no
    format matches; `ImageError` when the data is truncated or corrupt."""
    if not data:
        raise NotAnImage(f"{source}: empty (0 bytes)")
    return _decode(io.BytesIO(data), source, max_pixels)


def _decode(file: Path | io.BytesIO, source: str,
            max_pixels: int) -> tuple[Image.Image, list[str]]:
    notes: list[str] = []
    limit = f"the limit is {max_pixels / 1e6:g} MP"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(file)  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"{source}: image too large ({width}x{height}, "
                                    f"{width * height / 1e6:.0f} MP; {limit})")
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                notes.append(f"animated image with {frames} frames: using the first")
                image.seek(0)
            image.load()
        except UnidentifiedImageError:
            if _signed(file):  # an image's first bytes, then nothing Pillow can read
                raise ImageError(f"{source}: truncated or corrupt image data (it starts like "
                                 "an image file, but Pillow cannot read it)") from None
            raise NotAnImage(f"{source}: not an image Pillow can read") from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageTooLarge(f"{source}: image too large ({_pixel_count(file)}; "
                                f"{limit})") from None
        except ImageError:
            raise
        except Exception as e:  # Pillow's decoders raise many types for broken files
            raise ImageError(f"{source}: truncated or corrupt image data "
                             f"({type(e).__name__}: {e})") from None
    return image, notes


# The first bytes of the formats lenet documents (PNG, JPEG, GIF, BMP, WebP, PGM/PPM).
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"RIFF",
              b"P2", b"P5", b"P3", b"P6")


def _signed(file: Path | io.BytesIO) -> bool:
    if isinstance(file, io.BytesIO):
        head = file.getvalue()[:8]
    else:
        with file.open("rb") as f:
            head = f.read(8)
    return head.startswith(SIGNATURES)


def _pixel_count(file: Path | io.BytesIO) -> str:
    if isinstance(file, io.BytesIO):
        file.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Image.MAX_IMAGE_PIXELS, limit = None, Image.MAX_IMAGE_PIXELS
        try:
            with Image.open(file) as image:  # reads the header only
                w, h = image.size
        except Exception:  # the size said, but no decoder for it (a huge WebP): no figure
            return "over Pillow's limit"
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    return f"{w}x{h}, {w * h / 1e6:.0f} MP"


def to_grayscale(image: Image.Image) -> np.ndarray:
    """(H, W) float32 in [0, 1]; transparent areas become white; 16-bit and float images
    scaled from their own range (Pillow's "L" would clip them)."""
    with contextlib.suppress(Exception):  # a broken orientation tag: the image as stored
        image = ImageOps.exif_transpose(image)  # photos taken sideways
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        top = float(np.nanmax(values)) if values.size else 0.0
        scale = (65535.0 if mode.startswith("I;16") or top > 255 else
                 1.0 if mode == "F" and top <= 1.0 else 255.0)
        return np.nan_to_num(np.clip(values / scale, 0.0, 1.0)).astype(np.float32)
    try:
        if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
                mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba)
        gray = image.getchannel("L") if mode == "LAB" else image.convert("L")
    except (ValueError, OSError) as e:
        raise ImageError(f"an image in mode {mode} cannot be made grayscale ({e})") from None
    return np.asarray(gray, dtype=np.float32) / 255.0


def has_light_background(gray: np.ndarray) -> bool:
    """True when the image border is mostly light (so the object is dark on light)."""
    h, w = gray.shape
    band = max(1, min(h, w) // 20)
    border = np.concatenate([gray[:band].ravel(), gray[-band:].ravel(),
                             gray[:, :band].ravel(), gray[:, -band:].ravel()])
    return float(np.median(border)) > 0.5


def fit_to_square(gray: np.ndarray, size: tuple[int, int], fill: float = 1.0) -> np.ndarray:
    """Crop to the object (pixels well above the background), pad to a square, resize.

    `fill` is the fraction of the frame the object's longer side takes
    (1.0 for Fashion-MNIST; 20/28 for MNIST's digits).
    """
    mask = gray > max(0.15, 0.25 * float(gray.max()))
    if mask.any():
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        gray = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = gray.shape
    side = max(1, round(max(h, w) / fill))
    if side > MAX_SIDE:  # a long, thin strip: shrink it first, or the square is gigabytes
        shrink = MAX_SIDE / side
        h, w = max(1, round(h * shrink)), max(1, round(w * shrink))
        gray = np.asarray(Image.fromarray(gray.astype(np.float32), "F").resize(
            (w, h), Image.Resampling.LANCZOS), dtype=np.float32)
        side = max(1, round(max(h, w) / fill))
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top:top + h, left:left + w] = gray
    out = Image.fromarray(np.round(canvas * 255).astype(np.uint8))
    out = out.resize(size[::-1], Image.Resampling.LANCZOS)
    return np.array(out, dtype=np.uint8)


def prepare(path: str | Path, *, size: tuple[int, int] = (28, 28), invert: bool | None = None,
            fill: float = 1.0, mode: str = "auto") -> PreparedImage:
    """Load `path` and make it look like the training data (`prepare_image`)."""
    image, notes = open_image(path)
    return prepare_image(image, size=size, invert=invert, fill=fill, notes=notes, mode=mode)


def data_pixels(image: Image.Image, size: tuple[int, int]) -> np.ndarray | None:
    """The uint8 (H, W) pixels of a picture that already is what the model takes, else None:
    `size` (H, W), grayscale (mode L, or RGB/RGBA/LA/P with every pixel grey and opaque: a
    dataset image saved through a plotting library), a dark background."""
    if image.size != (size[1], size[0]) or "exif" in image.info:  # a tag could turn it
        return None
    if image.mode == "L":
        pixels = np.array(image, dtype=np.uint8)
    elif image.mode in ("RGB", "RGBA", "LA", "P"):
        rgba = np.asarray(image.convert("RGBA"))  # (H, W, 4): 3 KB at 28x28
        if (rgba[..., 3] != 255).any() or (rgba[..., 0] != rgba[..., 1]).any() or (
                rgba[..., 0] != rgba[..., 2]).any():
            return None
        pixels = np.array(rgba[..., 0])
    else:
        return None
    return None if has_light_background(pixels * np.float32(1 / 255)) else pixels


def looks_like_data(image: Image.Image, size: tuple[int, int]) -> bool:
    """True for a picture that `prepare_image` takes as it is (`data_pixels`)."""
    return data_pixels(image, size) is not None


def prepare_image(image: Image.Image, *, size: tuple[int, int] = (28, 28),
                  invert: bool | None = None, fill: float = 1.0,
                  notes: list[str] | None = None, mode: str = "auto") -> PreparedImage:
    """The one preparation rule (module docstring). `invert=None` decides from the border;
    `mode`: "auto" (the rule), "full" (crop, pad and resize even a picture of the model's
    size), "none" (only pictures of the model's size, taken as they are: not inverted
    unless `invert`)."""
    notes = notes or []
    if mode not in PREPARE:
        raise ValueError(f"mode must be one of {PREPARE}, got {mode!r}")
    if mode != "full" and not invert:
        pixels = data_pixels(image, size)
        if pixels is not None:
            return PreparedImage(pixels, False, notes)  # as it is: no photo check either
    own_size = image.size == (size[1], size[0])
    if mode == "none" and not own_size:
        raise ImageError(f"a picture of {image.size[0]}x{image.size[1]}: taken as it is, it "
                         f"must be the model's size ({size[1]}x{size[0]})")
    gray = to_grayscale(image)
    if invert is None:  # "none" inverts only when asked to
        invert = mode != "none" and has_light_background(gray)
    if invert:
        gray = 1.0 - gray
    if own_size and mode != "full":  # never cropped or resized: that would only blur it
        pixels = np.round(gray * 255).astype(np.uint8)
    else:
        pixels = fit_to_square(gray, size, fill)
    return PreparedImage(pixels, invert, notes, original_statistics(image))


def pictures(images: object) -> list[str | Path | Image.Image | PreparedImage] | None:
    """The items of `images` when it holds pictures (one, or a list or tuple, of file paths,
    PIL images or PreparedImages), else None: arrays of pixels, taken as they are."""
    kinds = (str, Path, Image.Image, PreparedImage)
    if isinstance(images, kinds):
        return [images]
    if isinstance(images, list | tuple) and images and all(isinstance(i, kinds)
                                                           for i in images):
        return list(images)
    return None
