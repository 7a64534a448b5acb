"""What a picture file says about itself before it is made 28x28: the statistics of the original.

`prepare` (lenet.data.images) shrinks a user's picture to the dataset's look,
and with it loses what tells a photograph from a product shot: the colour, the
texture of the background around the object, how much of the frame the object
fills. `original_statistics` measures those on a small nearest-neighbour
thumbnail of the decoded original (at most `THUMB` pixels a side: well under a
millisecond even for a 12 MP photo, since only the sampled pixels are read).
lenet.ood.photo_check turns them into the photo check's verdict.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMB = 64  # the thumbnail's longer side
STATISTICS = ("colourfulness", "border texture", "border spread", "background share",
              "object box", "object share", "border lit")


def thumbnail(image: Image.Image, side: int = THUMB) -> Image.Image:
    """A nearest-neighbour thumbnail (no filtering: only the sampled pixels are read, and the
    texture of the original stays visible)."""
    w, h = image.size
    scale = min(1.0, side / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.NEAREST)


def _rgb(image: Image.Image) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]; transparency onto white, as `to_grayscale` does."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        top = float(np.nanmax(values)) if values.size else 0.0
        grey = np.nan_to_num(np.clip(values / (65535.0 if top > 255 else 255.0 if top > 1
                                               else 1.0), 0, 1))
        return np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in
                                                       image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    elif mode == "LAB":  # Pillow converts LAB to nothing else: its lightness alone
        image = image.getchannel("L")
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


def original_statistics(image: Image.Image) -> np.ndarray:
    """(len(STATISTICS),) float64, each in [0, 1] or near it:

    - colourfulness: Hasler and Suesstrunk's measure (spread and mean of the
      red-green and yellow-blue opponents), 0 for a grey picture;
    - border texture: the mean |step| between neighbours in the outer band (a sixteenth
      of the side), on the grey thumbnail, the object's background made dark as
      `prepare` makes it; a product shot's plain background has next to none;
    - border spread: the standard deviation of the band's grey values;
    - background share: the share of all pixels within 0.08 of the band's median;
    - object box: the area of the box around the pixels `prepare` crops to, as a share
      of the frame; object share: those pixels' own share;
    - border lit: the share of the band above 10% of full scale (a dark background has
      none).
    """
    rgb = _rgb(thumbnail(image))  # (h, w, 3)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colour = (np.sqrt(rg.var() + yb.var())
              + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)  # (h, w), as Pillow's "L"
    h, w = grey.shape
    band = max(1, min(h, w) // 16)
    ring = np.ones((h, w), bool)
    ring[band:h - band, band:w - band] = False
    if np.median(grey[ring]) > 0.5:  # a light background, inverted as `prepare` does
        grey = 1 - grey
    border = grey[ring]
    steps_x = np.abs(np.diff(grey, axis=1))[ring[:, 1:] & ring[:, :-1]]
    steps_y = np.abs(np.diff(grey, axis=0))[ring[1:] & ring[:-1]]
    texture = float(np.concatenate([steps_x, steps_y]).mean()) if h > 1 and w > 1 else 0.0
    median = float(np.median(border))
    mask = grey > max(0.15, 0.25 * float(grey.max()))  # fit_to_square's object
    if mask.any():
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) / (h * w)
    else:
        box = 0.0
    return np.array([colour, texture, float(border.std()),
                     float(np.mean(np.abs(grey - median) < 0.08)), box, float(mask.mean()),
                     float(np.mean(border > 0.1))])
