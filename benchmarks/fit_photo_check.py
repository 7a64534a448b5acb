"""Fit the photo check's constants (lenet.ood.photo_check) and write src/lenet/ood/photo_fit.py.

    python benchmarks/fit_photo_check.py [--products 800] [--seed 0] [--dry-run]

Positives: the "fit" split of lenet.ood.photoset (scikit-image's photos and
/usr/share/wallpapers, whole, cropped and resized, as files); negatives:
Fashion-MNIST training images made into product shots (photoset.product_shot).
A logistic regression on the original statistics (lenet.ood.photo_check.design),
standardised, classes weighted equally, a small L2 penalty, fitted by Newton's
method. The "evaluate" split is never read here: `lenet ood RUN --benchmark`
reports it. Needs scikit-image (the `photos` extra) and Debian's
plasma-workspace-wallpapers; the result does not depend on any run.
"""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path

import numpy as np

from lenet.data import sources
from lenet.data.originals import STATISTICS, original_statistics
from lenet.ood import photo_check, photoset

OUT = Path(__file__).resolve().parent.parent / "src" / "lenet" / "ood" / "photo_fit.py"
L2 = 0.01


def logistic_regression(x: np.ndarray, y: np.ndarray, l2: float = L2
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, weights, bias) of a class-balanced, L2-penalised logistic regression."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = np.column_stack([(x - mean) / scale, np.ones(len(x))])
    weight = np.where(y == 1, 0.5 / np.sum(y == 1), 0.5 / np.sum(y == 0))
    ridge = l2 * np.diag(np.r_[np.ones(z.shape[1] - 1), 0])  # the bias unpenalised
    w = np.zeros(z.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-z @ w))
        step = np.linalg.solve((z * (weight * p * (1 - p))[:, None]).T @ z + ridge,
                               z.T @ (weight * (p - y)) + ridge @ w)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return mean, scale, w[:-1], float(w[-1])


def cross_validated(x: np.ndarray, y: np.ndarray, groups: list[str]) -> float:
    """The share of photos called photographs when each source picture (with its crops and
    resizes) is left out of the fit in turn: how the check carries to pictures it never
    saw, measured without the evaluate split."""
    called = []
    for group in sorted({g for g, label in zip(groups, y, strict=True) if label == 1}):
        out = np.array([g == group for g in groups])
        mean, scale, weights, bias = logistic_regression(x[~out], y[~out])
        called += list(((x[out] - mean) / scale @ weights + bias) > 0)
    return float(np.mean(called))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=800, help="product shots [800]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="fit and report, write nothing")
    args = parser.parse_args()
    started = time.perf_counter()
    fit = photoset.photo_files("fit", seed=args.seed)
    if not fit:
        raise SystemExit("no photos: pip install scikit-image; apt-get install "
                         "plasma-workspace-wallpapers")
    train = sources.load("fashion-mnist").train
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(len(train.images), args.products, replace=False))
    shots = [photoset.product_shot(train.images[i], rng) for i in rows]
    stats = np.array([original_statistics(f.image) for f in [*fit, *shots]])
    y = np.r_[np.ones(len(fit)), np.zeros(len(shots))]
    mean, scale, weights, bias = logistic_regression(photo_check.design(stats), y)
    odds = (photo_check.design(stats) - mean) / scale @ weights + bias
    print(f"{len(fit)} photo files from {len({f.name.rsplit('/', 1)[0] for f in fit})} sources "
          f"(fit split), {len(shots)} product shots; {time.perf_counter() - started:.0f} s")
    print(f"in-sample: photos called photographs {np.mean(odds[y == 1] > 0):.1%}, "
          f"product shots {np.mean(odds[y == 0] > 0):.1%}")
    pictures = [f.name.split("/")[0] for f in fit] + ["shots"] * len(shots)
    print("leave one picture out (the fit split only): photos called photographs "
          f"{cross_validated(photo_check.design(stats), y, pictures):.1%}")
    names = [*STATISTICS, "object density", "log border texture", "log border spread"]
    for name, w in zip(names, weights, strict=True):
        print(f"  {name:20s} {w:+.3f}")
    print(f"  {'bias':20s} {bias:+.3f}")
    print("fit split: " + ", ".join(sorted({f.name.rsplit('/', 1)[0] for f in fit})))
    if args.dry_run:
        return 0

    def literal(a: np.ndarray) -> str:
        values = textwrap.fill(", ".join(f"{v:.9g}" for v in a), 96, initial_indent="    ",
                               subsequent_indent="    ")
        return f"np.array([\n{values},\n])"

    OUT.write_text(
        '"""The photo check\'s fitted constants (lenet.ood.photo_check). Written by\n'
        f"`python benchmarks/fit_photo_check.py --seed {args.seed} --products {args.products}`"
        ': do not edit.\n\n'
        f"Fitted on {len(fit)} photo files (photoset's \"fit\" split) and {len(shots)} "
        'product shots\nof Fashion-MNIST training images."""\n\n'
        "import numpy as np\n\n"
        f"MEAN = {literal(mean)}\nSCALE = {literal(scale)}\n"
        f"WEIGHTS = {literal(weights)}\nBIAS = {bias:.9g}\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
