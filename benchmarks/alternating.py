"""What the benchmarks that compare two contenders in one run share: their command line
(--rounds, --threads) and the timing itself, alternating the two and swapping their order
every round, so that a machine's drift and noise fall on both alike."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def parser(doc: str | None, rounds: int) -> argparse.ArgumentParser:
    """A benchmark's parser: its module docstring as the help, --rounds and --threads."""
    made = argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--rounds", type=int, default=rounds,
                      help=f"times each contender runs, alternating [{rounds}]")
    made.add_argument("--threads", type=int, help="torch's threads [its default]")
    return made


def parse(made: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line, with --threads applied to torch."""
    args = made.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def alternate(before: Callable[[], object], after: Callable[[], object], rounds: int,
              warmups: int = 1) -> tuple[float, float]:
    """The median seconds of one call of `before` and of `after`, called in turns."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(warmups):
        before(), after()
    for r in range(rounds):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            (before, after)[i]()
            times[i].append(time.perf_counter() - t0)
    t_before, t_after = (statistics.median(t) for t in times)
    return t_before, t_after
