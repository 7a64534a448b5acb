"""The integer sums of the pixel-statistics OOD detector for a batch, compiled (pixels.c):
one pass over each uint8 image instead of numpy's seven.

    sums = pixel_sums(images)   # int64 (n, 8), or None: use numpy

None when the library cannot be built (no compiler) or LENET_NATIVE=0.
"""

from __future__ import annotations

import ctypes
from functools import cache

import numpy as np

from . import build

ABI_VERSION = 1
MAX_PIXELS = 4_000_000  # an image's, for pixels.c's 32-bit sums
# Columns of `pixel_sums`, in order.
FIELDS = ("total", "inner", "steps", "dark", "first_column_lit", "last_column_lit",
          "first_row_lit", "last_row_lit")


_why: dict[str, str | None] = {}  # why `library()` is None


@cache
def library() -> ctypes.CDLL | None:
    lib, _why["not"] = build.checked_library("pixels", ABI_VERSION)
    if lib is not None:
        lib.pixels_sums.restype = None
        lib.pixels_sums.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long,
                                    ctypes.c_long, ctypes.c_void_p]
    return lib


def describe() -> str:
    """Which path sums the pixels, and why (lenet doctor)."""
    if build.mode() == "off":
        return f"off ({build.MODE_ENV}=0): numpy's passes"
    return "compiled" if library() is not None else f"not built ({_why.get('not')}): numpy's"


def pixel_sums(images: np.ndarray) -> np.ndarray | None:
    """int64 (n, 8), the FIELDS of each uint8 (n, h, w) image; None without the library or
    for images of more than MAX_PIXELS."""
    lib = library() if build.mode() != "off" else None
    if lib is None:
        return None
    p = np.ascontiguousarray(images, np.uint8)
    n, h, w = p.shape
    if h * w > MAX_PIXELS:  # the C sums are 32-bit
        return None
    out = np.empty((n, len(FIELDS)), np.int64)
    lib.pixels_sums(p.ctypes.data, n, h, w, out.ctypes.data)
    return out
