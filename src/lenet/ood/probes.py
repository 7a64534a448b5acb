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
  degrees (the same pixels, unfamiliar poses).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.images import fit_to_square, prepare_image
from ..errors import LenetError

# scikit-image's photos that ship inside the package (no download): loader names.
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "cell", "clock", "coffee", "coins",
          "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "moon",
          "page", "retina", "rocket", "text")
FONTS = ("DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono")
GLYPHS = string.digits + string.ascii_uppercase + string.ascii_lowercase
KINDS = ("far", "glyphs", "near")


@dataclass(frozen=True)
class ProbeSet:
    name: str
    kind: str  # one of KINDS
    images: np.ndarray  # (N, H, W) uint8


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
            ProbeSet("whole photos as lenet predict prepares them", "far", prepared),
            ProbeSet("photo crops as lenet predict prepares them", "far",
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


def probe_sets(test_images: np.ndarray, *, n: int = 500, seed: int = 0) -> list[ProbeSet]:
    """Every OOD set of the benchmark, `n` images each for the random ones."""
    size = tuple(test_images.shape[1:])
    rng = np.random.default_rng(seed)
    return [*photo_sets(size, n, rng), *noise_sets(size, n, rng), *glyph_sets(size),
            *near_sets(test_images, n, rng)]
