"""`lenet data fetch` and `lenet data show`."""

from __future__ import annotations

import argparse

from ..data.datasets import DATASETS, SPLITS
from .args import positive_int


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("data", help="dataset tools: fetch, show")
    data = p.add_subparsers(title="data commands", metavar="ACTION", required=True)
    p = data.add_parser("fetch", help="find (or download) a dataset and verify its checksums")
    p.add_argument("--dataset", default="fashion-mnist", choices=list(DATASETS))
    p.add_argument("--data-dir", metavar="DIR", help="look here first")
    p.add_argument("--offline", action="store_true", help="never download")
    p.set_defaults(handler=run_fetch)

    p = data.add_parser("show", help="a grid of sample images with their labels")
    p.add_argument("--dataset", default="fashion-mnist", choices=list(DATASETS))
    p.add_argument("--data-dir", metavar="DIR", help="look here first")
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--n", type=positive_int, default=18, help="how many images [18]")
    p.add_argument("--seed", type=int, default=None, help="pick at random with this seed "
                   "[the first N]")
    p.add_argument("--out", metavar="FILE.png", required=True, help="where to write the grid")
    p.set_defaults(handler=run_show)


def run_fetch(args: argparse.Namespace) -> int:
    from ..data import sources

    dataset = sources.load(args.dataset, args.data_dir, download=not args.offline)
    print(f"{dataset.spec.title}: {len(dataset.train):,} train and {len(dataset.test):,} test "
          f"images, checksums verified, in {dataset.source}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data import sources
    from ..run.plots import plot_samples

    dataset = sources.load(args.dataset, args.data_dir)
    split = dataset.train if args.split == "train" else dataset.test
    n = min(args.n, len(split))
    if args.seed is None:
        picks = np.arange(n)
    else:
        picks = np.random.default_rng(args.seed).choice(len(split), n, replace=False)
    labels = [dataset.classes[int(split.labels[i])] for i in picks]
    path = plot_samples(split.images[picks], labels, args.out,
                        title=f"{dataset.spec.title}, {args.split} split")
    print(f"{n} {args.split} images: {path}")
    return 0
