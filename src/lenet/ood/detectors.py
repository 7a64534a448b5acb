"""Out-of-distribution detectors: each turns what a model sees into one score per image.

Higher scores mean more familiar (in-distribution); an image is flagged when
its score falls below a threshold calibrated elsewhere (lenet.ood.fit). Each
detector reads `Inputs` (penultimate features, logits, pixels), is fitted on
training images, and keeps its fitted state as a few numpy arrays (so it
saves to one .npz):

- `msp`: maximum softmax probability (Hendrycks & Gimpel 2017); no state.
- `energy`: negative free energy, logsumexp of the logits (Liu et al. 2020).
- `mahalanobis`: minus the smallest Mahalanobis distance from the features to a
  class mean, one covariance shared by all classes (Lee et al. 2018).
- `knn`: minus the distance from the L2-normalised features to their k-th
  nearest neighbour among a stored subset of normalised training features
  (Sun et al. 2022).
- `pixels`: minus how far simple pixel statistics (dark fraction, border
  brightness, mean, edge energy) fall outside the ranges seen in training.
- `combined`: Mahalanobis plus k-NN, each in units of its spread on training
  images, minus a large multiple of the pixel excess: anything with a pixel
  statistic no training image has falls far below every threshold, the rest
  is ranked by both feature scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import LenetError
from ..native import knn
from ..native import pixels as native_pixels


@dataclass(frozen=True)
class Inputs:
    """What detectors look at, for N images."""

    features: np.ndarray  # (N, D) float32: input of the last Linear layer
    logits: np.ndarray  # (N, classes) float32
    pixels: np.ndarray  # (N, H, W) uint8, as the model sees them

    def __len__(self) -> int:
        return len(self.logits)

    def take(self, rows: np.ndarray | slice) -> Inputs:
        return Inputs(self.features[rows], self.logits[rows], self.pixels[rows])


class Detector:
    name = ""

    def fit(self, inputs: Inputs, labels: np.ndarray) -> Detector:
        return self

    def score(self, inputs: Inputs) -> np.ndarray:
        """(N,) float64: higher = more like the training data."""
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> Detector:
        return self


class MSP(Detector):
    name = "msp"

    def score(self, inputs: Inputs) -> np.ndarray:
        z = inputs.logits.astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        return 1.0 / np.exp(z).sum(axis=1)  # max softmax = exp(0) / sum exp(z - max)


class Energy(Detector):
    name = "energy"

    def score(self, inputs: Inputs) -> np.ndarray:
        z = inputs.logits.astype(np.float64)
        top = z.max(axis=1)
        return top + np.log(np.exp(z - top[:, None]).sum(axis=1))


class Mahalanobis(Detector):
    """Class means and one shared covariance; distances computed as ||(f - mean) L||^2 with
    L the Cholesky factor of the precision, so scoring is one (D, D) product and a min."""

    name = "mahalanobis"
    RIDGE = 1e-6  # relative to the mean variance: dead ReLU units make the covariance singular

    def fit(self, inputs: Inputs, labels: np.ndarray) -> Mahalanobis:
        f = inputs.features.astype(np.float64)
        classes = int(labels.max()) + 1
        means = np.stack([f[labels == c].mean(axis=0) if np.any(labels == c)
                          else np.full(f.shape[1], np.inf) for c in range(classes)])
        centred = f - means[labels]
        cov = centred.T @ centred / len(f)
        cov += np.eye(len(cov)) * self.RIDGE * max(float(np.trace(cov)) / len(cov), 1e-12)
        whiten = np.linalg.cholesky(np.linalg.inv(cov))  # precision = L L^T
        self.whiten = whiten.astype(np.float32)  # (D, D)
        present = np.isfinite(means[:, 0])
        self.means = (means[present] @ whiten).astype(np.float32)  # (classes, D), whitened
        self._norms: np.ndarray | None = None
        return self

    def score(self, inputs: Inputs) -> np.ndarray:
        z = inputs.features @ self.whiten  # (N, D)
        d2 = ((z * z).sum(1)[:, None] - 2 * z @ self.means.T
              + self._mean_norms)  # (N, classes)
        return -np.maximum(d2.min(axis=1), 0).astype(np.float64)

    @property
    def _mean_norms(self) -> np.ndarray:
        if getattr(self, "_norms", None) is None:
            self._norms = (self.means * self.means).sum(1)[None, :]  # (1, classes)
        assert self._norms is not None
        return self._norms

    def state(self) -> dict[str, np.ndarray]:
        return {"whiten": self.whiten, "means": self.means}

    def load_state(self, state: dict[str, np.ndarray]) -> Mahalanobis:
        self.whiten, self.means, self._norms = state["whiten"], state["means"], None
        return self


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class KNN(Detector):
    """Sun et al. keep every training feature and k = 50; a seeded subset of `bank` features
    keeps one image's scoring to one (bank, D) product, with k scaled down alike."""

    name = "knn"

    def __init__(self, k: int = 10, bank: int = 5000, seed: int = 0) -> None:
        self.k, self.bank_size, self.seed = k, bank, seed

    def fit(self, inputs: Inputs, labels: np.ndarray) -> KNN:
        rng = np.random.default_rng(self.seed)
        rows = rng.choice(len(inputs), size=min(self.bank_size, len(inputs)), replace=False)
        self.bank = l2_normalise(inputs.features[np.sort(rows)])  # (M, D)
        self._bank_t: np.ndarray | None = None
        if len(self.bank) < self.k:
            raise LenetError(f"k-NN detector: {len(self.bank)} training features, fewer than "
                             f"k = {self.k}")
        return self

    def score(self, inputs: Inputs, chunk: int = 1024) -> np.ndarray:
        q = l2_normalise(inputs.features)
        if len(q) == 1:  # one image (the latency path): a matrix-vector product, no loop
            kth = np.partition(self.bank @ q[0], -self.k)[-self.k:-self.k + 1]
        else:  # compiled: no (n, M) matrix, no top-k pass (~2x the torch path, AVX-512)
            found = knn.kth_similarity(q, self._transposed(), self.k)
            if found is None:  # no compiler, or LENET_NATIVE=0
                found = self._kth_torch(q, chunk)
            kth = found
        # The k-th most similar, as a distance between unit vectors: sqrt(2 - 2 cos).
        return -np.sqrt(np.maximum(2 - 2 * kth.astype(np.float64), 0))

    def _kth_torch(self, q: np.ndarray, chunk: int) -> np.ndarray:
        # The product and the top-k on torch's threads (numpy's BLAS is held to one in lenet
        # serve); topk finds the k-th largest about 2.4x sooner than np.partition.
        kth = np.empty(len(q), np.float32)
        bank = torch.from_numpy(self.bank).T
        for i in range(0, len(q), chunk):
            sims = torch.from_numpy(q[i:i + chunk]) @ bank  # (n, M) cosine similarities
            kth[i:i + chunk] = torch.topk(sims, self.k, dim=1).values[:, -1].numpy()
        return kth

    def _transposed(self) -> np.ndarray:
        """The bank as (D, M), contiguous (the compiled path's layout), made once."""
        if getattr(self, "_bank_t", None) is None:  # (fit and load_state reset it)
            self._bank_t = np.ascontiguousarray(self.bank.T, np.float32)
        assert self._bank_t is not None
        return self._bank_t

    def state(self) -> dict[str, np.ndarray]:
        return {"bank": self.bank, "k": np.array(self.k)}

    def load_state(self, state: dict[str, np.ndarray]) -> KNN:
        self.bank, self.k = state["bank"], int(state["k"])
        self._bank_t = None
        return self


def pixel_statistics(pixels: np.ndarray) -> np.ndarray:
    """(N, 5) per image: dark fraction (below 5% of full scale), border mean (the outer two
    rows and columns), mean, mean |step| between neighbours, and how fully a frame is lit on
    two opposite sides (of the outer columns, or else rows, the lesser share of pixels above
    10% of full scale; all in [0, 1]). Fashion-MNIST has a black background and a dark
    border, a product touches an edge only in places; photos (even padded to a square with
    black bars: their other two sides stay lit), noise, blanks and constants all leave that
    range somewhere. Integer sums of the uint8 pixels, in one compiled pass an image
    (lenet.native.pixels) or a few numpy passes: a single image costs microseconds."""
    p = pixels.reshape(len(pixels), *pixels.shape[-2:])
    n, h, w = p.shape
    sums = native_pixels.pixel_sums(p)  # one pass an image, compiled; else numpy's passes
    if sums is not None:
        total, inner, steps, dark, *lit_sides = sums.T
    else:
        # Sums, not means: numpy's mean costs ~7 us of Python a call, which one image notices.
        total = p.sum(axis=(1, 2), dtype=np.int64)
        inner = p[:, 2:-2, 2:-2].sum(axis=(1, 2), dtype=np.int64)
        q = p.astype(np.int16)
        steps = (np.abs(q[:, 1:] - q[:, :-1]).sum(axis=(1, 2))
                 + np.abs(q[:, :, 1:] - q[:, :, :-1]).sum(axis=(1, 2)))
        dark = np.count_nonzero(p.reshape(n, h * w) < 13, axis=1)
        lit = 25  # 10% of full scale
        lit_sides = [np.count_nonzero(side > lit, axis=1)
                     for side in (p[:, :, 0], p[:, :, -1], p[:, 0], p[:, -1])]
    columns = np.minimum(lit_sides[0], lit_sides[1]) / h
    rows = np.minimum(lit_sides[2], lit_sides[3]) / w
    out = np.empty((n, 5))
    out[:, 0] = dark / (h * w)
    out[:, 1] = (total - inner) / (255 * (h * w - (h - 4) * (w - 4)))
    out[:, 2] = total / (255 * h * w)
    out[:, 3] = steps / (255 * ((h - 1) * w + h * (w - 1)))
    out[:, 4] = np.maximum(columns, rows)
    return out


class Pixels(Detector):
    """Ranges of `pixel_statistics` over training images (the 0.05% and 99.95% quantiles);
    the score is minus the summed excess outside them, in units of each range's width."""

    name = "pixels"
    QUANTILE = 0.0005

    def fit(self, inputs: Inputs, labels: np.ndarray) -> Pixels:
        stats = pixel_statistics(inputs.pixels)
        self.low = np.quantile(stats, self.QUANTILE, axis=0)
        self.high = np.quantile(stats, 1 - self.QUANTILE, axis=0)
        return self

    def score(self, inputs: Inputs) -> np.ndarray:
        stats = pixel_statistics(inputs.pixels)
        excess = np.abs(stats - np.clip(stats, self.low, self.high))
        return -(excess / np.maximum(self.high - self.low, 1e-3)).sum(axis=1)

    def state(self) -> dict[str, np.ndarray]:
        return {"low": self.low, "high": self.high}

    def load_state(self, state: dict[str, np.ndarray]) -> Pixels:
        self.low, self.high = state["low"], state["high"]
        return self


class Combined(Detector):
    """Mahalanobis and k-NN, each in units of its spread on training images (median 0,
    interquartile range 1), added; minus PENALTY such units per range width of pixel excess.
    The two feature scores err on different inputs (glyphs fool k-NN more, photo textures
    Mahalanobis more), and pixels catch what features miss (noise, blanks)."""

    name = "combined"
    PENALTY = 20.0
    SAMPLE = 1000  # fitting images the spreads are measured on

    def __init__(self, mahalanobis: Mahalanobis, knn: KNN, pixels: Pixels) -> None:
        self.parts = (mahalanobis, knn)
        self.pixels = pixels

    def fit(self, inputs: Inputs, labels: np.ndarray) -> Combined:
        # The parts are fitted already (they are the plain detectors); only the scales are
        # ours. (A k-NN score of a bank image counts itself among its neighbours: a slight
        # shift of the median, harmless for a scale.)
        sample = inputs.take(slice(0, self.SAMPLE))
        quartiles = [np.quantile(p.score(sample), [0.25, 0.5, 0.75]) for p in self.parts]
        self.centre = np.array([q[1] for q in quartiles])
        self.spread = np.array([max(q[2] - q[0], 1e-9) for q in quartiles])
        return self

    def score(self, inputs: Inputs) -> np.ndarray:
        total = self.PENALTY * self.pixels.score(inputs)
        for part, centre, spread in zip(self.parts, self.centre, self.spread, strict=True):
            total += (part.score(inputs) - centre) / spread
        return total

    def state(self) -> dict[str, np.ndarray]:
        return {"centre": self.centre, "spread": self.spread}

    def load_state(self, state: dict[str, np.ndarray]) -> Combined:
        self.centre, self.spread = state["centre"], state["spread"]
        return self


def make_detectors(knn_k: int = 10, knn_bank: int = 5000, seed: int = 0) -> dict[str, Detector]:
    """Every detector lenet knows, unfitted, by name; `combined` shares the plain detectors'
    fitted parts, so fit it last."""
    mahalanobis, knn, pixels = Mahalanobis(), KNN(knn_k, knn_bank, seed), Pixels()
    return {d.name: d for d in (MSP(), Energy(), mahalanobis, knn, pixels,
                                Combined(mahalanobis, knn, pixels))}

