"""Offline photographs as files: for fitting the photo check and for the benchmark.

Two sources, both on disk with no download:

- scikit-image's bundled photos (the `photos` extra): the astronaut, a cat,
  coffee, coins, a rocket, the moon, ... (the horse is left out: a black
  silhouette on white is a product shot's look, not a photograph's);
- Debian's `plasma-workspace-wallpapers` (photographs and illustrations
  under /usr/share/wallpapers): each wallpaper's screenshot and its
  portrait version where it has one.

Each source image belongs to one split, fixed by a hash of its name
(`split_of`): "fit" (the photo check's constants are fitted on these, by
benchmarks/fit_photo_check.py) or "evaluate" (the benchmark's photos as files;
never used for fitting or calibration). Every image is used whole, as random
crops and resized, each encoded as a JPEG or PNG file and decoded again, so that
it reaches `prepare` as a user's file would.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

WALLPAPERS = Path("/usr/share/wallpapers")
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "cell", "clock", "coffee",
                  "coins", "grass", "gravel", "hubble_deep_field", "immunohistochemistry",
                  "moon", "page", "retina", "rocket", "text")
SPLITS = ("fit", "evaluate")
EVALUATE_SHARE = 0.4  # of the source images, by their names' hashes
MAX_SIDE = 1024  # wallpapers are decoded at most this large (JPEG draft mode; 5 MP PNGs: resized)


@dataclass(frozen=True)
class PhotoFile:
    name: str  # source and variant, e.g. "wallpaper:Altai/screenshot/crop-1"
    image: Image.Image  # decoded from the file's bytes


def split_of(name: str) -> str:
    """"fit" or "evaluate" for a source image, by a hash of its picture's name (a wallpaper's
    screenshot and portrait versions share one), stable everywhere."""
    picture = name.split("/")[0]
    digest = int.from_bytes(hashlib.sha256(picture.encode()).digest()[:8], "big")
    return "evaluate" if digest / 2 ** 64 < EVALUATE_SHARE else "fit"


def _skimage_sources() -> dict[str, Callable[[], Image.Image]]:
    try:
        from skimage import data
    except ImportError:
        return {}

    def loader(name: str) -> Callable[[], Image.Image]:
        return lambda: Image.fromarray(np.asarray(getattr(data, name)()))

    return {f"skimage:{n}": loader(n) for n in SKIMAGE_PHOTOS if hasattr(data, n)}


def _open_small(path: Path) -> Image.Image:
    image: Image.Image = Image.open(path)
    image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decoded at 1/2, 1/4, 1/8 scale
    image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def _wallpaper_sources(root: Path = WALLPAPERS) -> dict[str, Callable[[], Image.Image]]:
    out: dict[str, Callable[[], Image.Image]] = {}
    for folder in sorted(p for p in root.glob("*/contents") if p.is_dir()):
        name = folder.parent.name
        shots = sorted(folder.glob("screenshot.*"))
        portrait = sorted((p for p in (folder / "images").glob("*.*")
                           if "x" in p.stem and _portrait(p.stem)), key=lambda p: p.stem)
        for kind, files in (("screenshot", shots), ("portrait", portrait[:1])):
            for path in files:
                out[f"wallpaper:{name}/{kind}"] = functools.partial(_open_small, path)
    return out


def _portrait(stem: str) -> bool:
    w, _, h = stem.partition("x")
    return w.isdigit() and h.isdigit() and int(h) > int(w)


def sources() -> dict[str, Callable[[], Image.Image]]:
    """Every source image found here, by name: a loader each (decoded only when asked)."""
    return {**_skimage_sources(), **_wallpaper_sources()}


def _as_file(image: Image.Image, jpeg: bool) -> Image.Image:
    """`image` written as a JPEG (quality 90) or PNG file and read back, as a user's file."""
    buffer = io.BytesIO()
    if jpeg:
        image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(
            buffer, "JPEG", quality=90)
    else:
        image.save(buffer, "PNG", compress_level=1)
    buffer.seek(0)
    decoded = Image.open(buffer)
    decoded.load()
    return decoded


def variants(name: str, image: Image.Image, rng: np.random.Generator,
             crops: int = 2) -> Iterator[PhotoFile]:
    """The image whole, `crops` random crops (a fifth to all of the shorter side, aspect
    2:1 to 1:2) and once resized (a quarter to the whole size), each as a file."""
    w, h = image.size
    yield PhotoFile(f"{name}/whole", _as_file(image, jpeg=bool(rng.integers(2))))
    for k in range(crops):
        side = rng.uniform(0.2, 1.0) * min(w, h)
        aspect = float(np.exp(rng.uniform(-np.log(2), np.log(2))))
        cw, ch = min(w, max(8, round(side * aspect))), min(h, max(8, round(side / aspect)))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = image.crop((left, top, left + cw, top + ch))
        yield PhotoFile(f"{name}/crop-{k}", _as_file(crop, jpeg=bool(rng.integers(2))))
    scale = rng.uniform(0.25, 1.0)
    small = image.resize((max(8, round(w * scale)), max(8, round(h * scale))),
                         Image.Resampling.LANCZOS)
    yield PhotoFile(f"{name}/resized", _as_file(small, jpeg=bool(rng.integers(2))))


def photo_files(split: str, *, seed: int = 0, crops: int = 2) -> list[PhotoFile]:
    """Every source image of `split` ("fit" or "evaluate") whole, cropped and resized, as
    decoded files; empty when neither source is installed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out: list[PhotoFile] = []
    for name, load in sources().items():
        if split_of(name) != split:
            continue
        rng = np.random.default_rng([seed, int(hashlib.sha256(name.encode()).hexdigest()[:8],
                                               16)])
        out.extend(variants(name, load(), rng, crops))
    return out


def product_shot(item: np.ndarray, rng: np.random.Generator) -> PhotoFile:
    """One dataset image (uint8 (28, 28), light on black) as a product shot's file: enlarged
    to 100-1000 pixels a side, on a plain background (white with the object dark, or black)
    with a margin, tinted, lit unevenly and with sensor noise; the photo check's
    in-distribution side (what a user photographing a garment would send)."""
    side = int(rng.integers(100, 601))
    obj = np.asarray(Image.fromarray(item).resize((side, side), Image.Resampling.BICUBIC),
                     np.float32) / 255  # (side, side)
    # top, bottom, left, right, as shares of the side; a fifth of shots cropped tight
    margin = rng.uniform(0.0, 0.4, size=4) * (rng.random() > 0.2)
    h = side + round(side * (margin[0] + margin[1]))
    w = side + round(side * (margin[2] + margin[3]))
    canvas = np.zeros((h, w), np.float32)
    top, left = round(side * margin[0]), round(side * margin[2])
    canvas[top:top + side, left:left + side] = obj
    light = bool(rng.integers(2))  # dark object on a white background, as most shots are
    tint = rng.uniform(0.0, 1.0, size=3) if rng.random() < 0.5 else np.ones(3)
    tint = tint.astype(np.float32)
    # (h, w, 3): light, white where the dataset is black, the object a darker shade of its
    # tint; else the object in its tint on black
    rgb = (1 - canvas[..., None] * (1 - 0.6 * tint)) if light else canvas[..., None] * tint
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-0.08, 0.08, size=2)
    rgb = rgb + (gx * xx / w + gy * yy / h)[..., None]  # uneven light
    rgb = rgb + rng.standard_normal(rgb.shape, np.float32) * np.float32(rng.uniform(0.0, 0.02))
    pixels = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    return PhotoFile("product", _as_file(Image.fromarray(pixels), jpeg=bool(rng.integers(2))))
