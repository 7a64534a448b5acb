"""What a training run shows in the terminal: a progress bar, a table row per epoch,
and the book's closing lines. It consumes metrics; it computes none."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TextIO

from tqdm import tqdm

from ..base.tables import format_row

COLUMNS = ("epoch", "train loss", "train acc", "{e} loss", "{e} acc", "examples/s", "seconds")
WIDTHS = (5, 10, 9, 9, 8, 11, 8)


class Console:
    def __init__(self, *, progress: bool | None = None, stream: TextIO | None = None) -> None:
        """`progress=None` shows bars only when stderr is a terminal."""
        self.progress = progress
        self.stream = stream or sys.stdout

    def print(self, text: str = "") -> None:
        tqdm.write(text, file=self.stream)  # never tears an active progress bar
        self.stream.flush()  # a log file shows each epoch as it ends

    def bar(self, total: int, initial: int, desc: str) -> tqdm:
        disable = None if self.progress is None else not self.progress
        return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                    disable=disable, dynamic_ncols=True, file=sys.stderr)

    def table_header(self, eval_name: str) -> None:
        cells = [c.format(e=eval_name) for c in COLUMNS]
        self.print(format_row(cells, WIDTHS, "r" * len(WIDTHS)))

    def table_row(self, row: Mapping[str, Any], eval_name: str) -> None:
        def evaluated(key: str) -> str:  # blank in an epoch --eval-every skips
            return f"{row[key]:.4f}" if key in row else ""

        values = (
            f"{row['epoch']}", f"{row['train_loss']:.4f}", f"{row['train_acc']:.4f}",
            evaluated(f"{eval_name}_loss"), evaluated(f"{eval_name}_acc"),
            f"{row['examples_per_sec']:,.0f}", f"{row['seconds']:.1f}",
        )
        self.print(format_row(values, WIDTHS, "r" * len(WIDTHS)))

    def book_lines(self, row: Mapping[str, Any], eval_name: str, examples_per_sec: float,
                   device: str) -> None:
        """The book's summary: 'loss 0.471, train acc 0.822, test acc 0.836' and speed."""
        self.print(f"loss {row['train_loss']:.3f}, train acc {row['train_acc']:.3f}, "
                   f"{eval_name} acc {row[f'{eval_name}_acc']:.3f}")
        self.print(f"{examples_per_sec:.1f} examples/sec on {device}")
