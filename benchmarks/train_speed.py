"""Training speed of lenet vs the book's pipeline, measured side by side in one run.

Both train the book's LeNet-5 with SGD (lr 0.1, batch 128) on the real
Fashion-MNIST for one epoch at a time, alternating, from the same initial
weights; the table reports each epoch's examples/s and the median ratio.

    python benchmarks/train_speed.py [--rounds 3] [--threads N]

Run it on an otherwise idle machine: timings on shared cores are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from book_pipeline import BOOK_NUM_WORKERS, book_dataloader, book_fit_epoch

from lenet import sources
from lenet.config import TrainConfig
from lenet.device import describe, pick_device, set_threads
from lenet.fastpath import prepare_model
from lenet.loader import make_loaders
from lenet.models import MODELS, build_model
from lenet.optim import build_optimizer, build_scheduler
from lenet.rundir import cpu_model
from lenet.training import train_one_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="epochs of each, alternating")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default]")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")  # the book's 4

    threads = set_threads(args.threads)
    device = pick_device("cpu")
    config = TrainConfig()  # the book's recipe
    data = sources.load(config.dataset, download=False)
    print(f"conditions: {cpu_model()}, {threads} torch threads, torch {torch.__version__}, "
          f"{describe(device)}; LeNet-5, SGD lr {config.lr}, batch {config.batch_size}, "
          f"book loader with {BOOK_NUM_WORKERS} workers")

    book_model = build_model(MODELS["lenet5"], seed=0)
    book_optim = torch.optim.SGD(book_model.parameters(), lr=config.lr)
    book_loader = book_dataloader(data.train.images, data.train.labels, config.batch_size, True)

    start = time.perf_counter()
    loaders = make_loaders(data, device, batch_size=config.batch_size, seed=0)
    ours_model = prepare_model(build_model(MODELS["lenet5"], seed=0), device)
    ours_optim = build_optimizer(ours_model.parameters(), config)
    ours_sched = build_scheduler(ours_optim, config, len(loaders.train))
    print(f"lenet set-up (tensors on device, model): {time.perf_counter() - start:.2f} s")

    print(f"{'round':>5}  {'book ex/s':>10}  {'lenet ex/s':>10}  {'ratio':>6}")
    ratios = []
    for epoch in range(args.rounds):
        n, seconds = book_fit_epoch(book_model, book_loader, book_optim)
        book = n / seconds
        totals = train_one_epoch(ours_model, loaders.train, ours_optim, ours_sched, epoch=epoch)
        ours = totals.examples_per_sec
        ratios.append(ours / book)
        print(f"{epoch + 1:>5}  {book:>10,.0f}  {ours:>10,.0f}  {ours / book:>5.2f}x")
    print(f"median ratio: {statistics.median(ratios):.2f}x (lenet / book pipeline)")


if __name__ == "__main__":
    main()
