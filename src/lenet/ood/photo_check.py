"""The photo check: is a file a whole photograph, whatever its 28x28 thumbnail looks like?

A photograph prepared like the data (grey, cropped, padded, 28x28) can look
like a product: `combined` alone passed 7 of 18 whole photos at seed 0. The file
itself says more (lenet.data.originals: colour, the texture and spread of the
background around the object, how much of the frame the object fills), and a
logistic regression on those statistics tells photographs from product shots
(a garment on a plain background, what a user photographing one sends).

Its constants are fitted once, on offline photos (lenet.ood.photoset, the "fit"
split) against Fashion-MNIST training images made into product shots, by
`python benchmarks/fit_photo_check.py`, and shipped in `photo_fit.py`: the
check reads the file only, never the model, so one fit serves every run, and a
user without scikit-image or the wallpapers gets the same check.

A file the check calls a photograph loses `PENALTY` (plus its logit) from the
`combined` score: far below any threshold, as a pixel statistic out of range
does. Inputs without a file, or taken as they are (they already looked like
the data), have no statistics and lose nothing, so their verdicts are the
arrays' verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import photo_fit

PENALTY = 100.0  # in `combined`'s units (interquartile ranges of training images' scores)
DETECTORS = ("combined",)  # the detectors the check is part of


def design(stats: np.ndarray) -> np.ndarray:
    """(N, 10) from (N, 7) original statistics: the seven, the object's density in its box,
    and the logs of the border's texture and spread (a plain background is near 0 in both,
    and the differences that matter there are ratios)."""
    stats = np.asarray(stats, np.float64).reshape(-1, stats.shape[-1])
    density = stats[:, 5] / np.maximum(stats[:, 4], 1e-3)
    return np.column_stack([stats, density, np.log(stats[:, 1] + 1e-3),
                            np.log(stats[:, 2] + 1e-3)])


def logits(stats: np.ndarray) -> np.ndarray:
    """(N,) log-odds that each file is a photograph rather than a product shot."""
    z = (design(stats) - photo_fit.MEAN) / photo_fit.SCALE
    return z @ photo_fit.WEIGHTS + photo_fit.BIAS


def penalties(originals: Sequence[np.ndarray | None] | None, n: int) -> np.ndarray:
    """(n,) what each input loses from the `combined` score: 0 without statistics or when
    the check says product shot, else PENALTY plus the logit."""
    out = np.zeros(n)
    if originals is None:
        return out
    if len(originals) != n:
        raise ValueError(f"{len(originals)} original statistics for {n} images")
    rows = [k for k, o in enumerate(originals) if o is not None]
    if rows:
        odds = logits(np.stack([o for o in originals if o is not None]))  # rows' order
        out[rows] = np.where(odds > 0, PENALTY + odds, 0.0)
    return out


def adjust(scores: np.ndarray, detector: str,
           originals: Sequence[np.ndarray | None] | None) -> np.ndarray:
    """`scores` of `detector` with the photo check applied where it is part of it."""
    if originals is None or detector not in DETECTORS:
        return scores
    return scores - penalties(originals, len(scores))
