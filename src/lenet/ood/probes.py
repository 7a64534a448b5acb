"""Out-of-distribution sets lenet makes offline, for `lenet ood RUN --benchmark`.

Every set is uint8 (N, 28, 28) (or the run's input size), seeded, and comes in
one of three kinds:

- far: scikit-image's bundled photos (random crops resized to 28x28 and whole
  images, grey and inverted, and whole photos as `lenet predict` prepares a
  user's file), uniform and Gaussian noise, blank and constant images;
- glyphs: digits and letters rendered in the DejaVu fonts matplotlib ships,
  cropped and centred with the longer side filling the frame, as Fashion-MNIST
  centres its products;
- near: Fashion-MNIST images flipped upside down or rotated by 90 or 180
  degrees (the same pixels, unfamiliar poses);
- photos: photographs as files (lenet.ood.photoset's "evaluate" split: never
  fitted on, never calibrated on), whole and cropped or resized, through the
  preparation a user's file gets, the photo check reading each original.

Beside them, one in-distribution set of kind "in": the test images themselves
saved as PNG files and read back through the same preparation: it must score
as the arrays do.
"""

from __future__ import annotations

import io
import string
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.images import PreparedImage, fit_to_square, prepare_image
from ..errors import LenetError
from . import photoset

# scikit-image's photos that ship inside the package (no download): loader names.
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "cell", "clock", "coffee", "coins",
          "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "moon",
          "page", "retina", "rocket", "text")
FONTS = ("DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono")
GLYPHS = string.digits + string.ascii_uppercase + string.ascii_lowercase
KINDS = ("far", "glyphs", "near", "photos")
IN_FILES = "test images as files"


@dataclass(frozen=True)
class ProbeSet:
    name: str
    kind: str  # one of KINDS, or "in"
    images: np.ndarray  # (N, H, W) uint8
    # per image, its file's statistics (lenet.data.originals) or None; None: no files
    originals: list[np.ndarray | None] | None = None


def photo_arrays() -> dict[str, np.ndarray]:
    """scikit-image's bundled photos as grey float32 (H, W) in [0, 1] (needs scikit-image)."""
    try:
        from skimage import data
    except ImportError:
        raise LenetError("the benchmark's photos need scikit-image: "
                         "pip install scikit-image") from None
    out = {}
    for name in PHOTOS:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # a photo this scikit-image does not bundle (it would download it)
            continue
        if image.ndim == 3:
            image = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        image = image.astype(np.float32)
        out[name] = image / 255 if image.max() > 1 else image
    if not out:
        raise LenetError("scikit-image bundles none of its sample photos here")
    return out


def _resize(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8))
    return np.asarray(image.resize(size[::-1], Image.Resampling.LANCZOS), dtype=np.uint8)


def photo_sets(size: tuple[int, int], n_crops: int, rng: np.random.Generator) -> list[ProbeSet]:
    photos = list(photo_arrays().values())
    crops, prepared_crops = [], []
    for i in range(n_crops):
        photo = photos[i % len(photos)]
        h, w = photo.shape
        side = int(rng.integers(max(8, min(h, w) // 10), min(h, w) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = photo[top:top + side, left:left + side]
        crops.append(_resize(crop, size))
        prepared_crops.append(_prepare(crop, size))
    whole = np.stack([_resize(p, size) for p in photos])
    crops_ = np.stack(crops)
    prepared = np.stack([_prepare(p, size) for p in photos])
    return [ProbeSet("photo crops", "far", crops_),
            ProbeSet("photo crops, inverted", "far", 255 - crops_),
            ProbeSet("whole photos", "far", whole),
            ProbeSet("whole photos, inverted", "far", 255 - whole),
            ProbeSet("whole photos prepared, pixels only (no file)", "far", prepared),
            ProbeSet("photo crops prepared, pixels only (no file)", "far",
                     np.stack(prepared_crops))]


def _prepare(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """As `lenet predict` prepares a file: inverted if its border is light, cropped to the
    object, padded square, resized."""
    image = Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8))
    return prepare_image(image, size=size).pixels


def noise_sets(size: tuple[int, int], n: int, rng: np.random.Generator) -> list[ProbeSet]:
    levels = np.arange(0, 256, 15, dtype=np.uint8)  # 18 constant images, 0 (blank) to 255
    return [
        ProbeSet("uniform noise", "far", rng.integers(0, 256, size=(n, *size), dtype=np.uint8)),
        ProbeSet("Gaussian noise", "far",
                 np.clip(rng.normal(128, 64, size=(n, *size)), 0, 255).astype(np.uint8)),
        ProbeSet("blank and constant", "far",
                 np.broadcast_to(levels[:, None, None], (len(levels), *size)).copy()),
    ]


def font_path(family: str) -> str:
    from matplotlib import font_manager

    return font_manager.findfont(font_manager.FontProperties(family=family),
                                 fallback_to_default=True)


def render_glyph(char: str, font: ImageFont.FreeTypeFont, size: tuple[int, int]) -> np.ndarray:
    """White `char` on black, cropped and centred, its longer side filling the frame."""
    canvas = Image.new("L", (96, 96), 0)
    ImageDraw.Draw(canvas).text((48, 48), char, fill=255, font=font, anchor="mm")
    return fit_to_square(np.asarray(canvas, np.float32) / 255, size)


def glyph_sets(size: tuple[int, int]) -> list[ProbeSet]:
    sets: dict[str, list[np.ndarray]] = {"rendered digits": [], "rendered letters": []}
    for family in FONTS:
        font = ImageFont.truetype(font_path(family), 64)
        for char in GLYPHS:
            group = "rendered digits" if char.isdigit() else "rendered letters"
            sets[group].append(render_glyph(char, font, size))
    return [ProbeSet(name, "glyphs", np.stack(images)) for name, images in sets.items()]


def near_sets(test_images: np.ndarray, n: int, rng: np.random.Generator) -> list[ProbeSet]:
    picks = test_images[np.sort(rng.choice(len(test_images), min(n, len(test_images)),
                                           replace=False))]
    return [ProbeSet("test images upside down", "near", picks[:, ::-1].copy()),
            ProbeSet("test images rotated 90", "near", np.rot90(picks, 1, axes=(1, 2)).copy()),
            ProbeSet("test images rotated 180", "near", np.rot90(picks, 2, axes=(1, 2)).copy())]


def file_sets(test_images: np.ndarray, size: tuple[int, int], seed: int) -> list[ProbeSet]:
    """Photographs as files (photoset's "evaluate" split; none when neither scikit-image nor
    the wallpapers are installed), and the test images saved as PNG files, each through
    `prepare_image`."""
    sets = []
    groups: dict[str, list[PreparedImage]] = {"whole photos as files": [],
                                              "photos cropped or resized, as files": []}
    for f in photoset.photo_files("evaluate", seed=seed):
        group = "whole photos as files" if f.name.endswith("/whole") else (
            "photos cropped or resized, as files")
        groups[group].append(prepare_image(f.image, size=size))
    for name, prepared in groups.items():
        if prepared:
            sets.append(ProbeSet(name, "photos", np.stack([p.pixels for p in prepared]),
                                 [p.original for p in prepared]))
    as_files = [prepare_image(_png(image), size=size) for image in test_images]
    sets.append(ProbeSet(IN_FILES, "in", np.stack([p.pixels for p in as_files]),
                         [p.original for p in as_files]))
    return sets


def _png(pixels: np.ndarray) -> Image.Image:
    """A uint8 (H, W) image written as a PNG file and read back."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    buffer.seek(0)
    image = Image.open(buffer)
    image.load()
    return image


def probe_sets(test_images: np.ndarray, *, n: int = 500, seed: int = 0) -> list[ProbeSet]:
    """Every OOD set of the benchmark, `n` images each for the random ones, and the test
    images as files."""
    size = tuple(test_images.shape[1:])
    rng = np.random.default_rng(seed)
    return [*photo_sets(size, n, rng), *noise_sets(size, n, rng), *glyph_sets(size),
            *near_sets(test_images, n, rng), *file_sets(test_images, size, seed)]
