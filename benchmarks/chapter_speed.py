"""The book's LeNet chapter code, one epoch, on `lenet.d2l` vs a faithful copy of d2l.

The code is tests/book/lenet_current_edition.py (the chapter as typed by a
reader) with `max_epochs=1`. Each contender runs in its own fresh process,
alternating, `--rounds` times; `trainer.fit` (one training epoch and one
validation pass) is timed, and so is the whole script after imports.

    python benchmarks/chapter_speed.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHAPTER = HERE.parent / "tests" / "book" / "lenet_current_edition.py"
IMPORTS = {"lenet": "from lenet import d2l", "book": "import book_d2l as d2l"}


def worker(which: str) -> None:
    """Run the chapter once with `which` d2l; print timings as JSON."""
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(HERE))
    code = CHAPTER.read_text().replace("max_epochs=10", "max_epochs=1")
    code = code.replace("from lenet import d2l", IMPORTS[which])
    if which == "book":
        import book_d2l

        from lenet.data import sources

        data = sources.load("fashion-mnist", download=False)  # torchvision's loading, untimed
        book_d2l.FashionMNIST.arrays = {"train": (data.train.images, data.train.labels),
                                        "val": (data.test.images, data.test.labels)}
        module = book_d2l
    else:
        from lenet import d2l as module
    fit_seconds = []
    original_fit = module.Trainer.fit

    def timed_fit(self, model, data):
        start = time.perf_counter()
        original_fit(self, model, data)
        fit_seconds.append(time.perf_counter() - start)

    module.Trainer.fit = timed_fit
    import torch  # noqa: F401 (imported before the clock starts, as for both)

    start = time.perf_counter()
    exec(compile(code, str(CHAPTER), "exec"), {"__name__": "__chapter__"})
    total = time.perf_counter() - start
    print(json.dumps({"fit": fit_seconds[0], "total": total}))


def run(which: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as plots:  # lenet.d2l writes its figure here
        out = subprocess.run([sys.executable, __file__, "--worker", which], capture_output=True,
                             text=True, check=True, cwd=HERE,
                             env={**os.environ, "LENET_D2L_PLOTS": plots})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", choices=sorted(IMPORTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    import torch

    from lenet.run.directory import cpu_model

    print(f"conditions: {cpu_model()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; the chapter's code with max_epochs=1 (batch 128)")
    print(f"{'round':>5}  {'book fit s':>10}  {'lenet fit s':>11}  {'ratio':>6}  "
          f"{'book total s':>12}  {'lenet total s':>13}")
    ratios = []
    for r in range(args.rounds):
        book, ours = run("book"), run("lenet")
        ratios.append(book["fit"] / ours["fit"])
        print(f"{r + 1:>5}  {book['fit']:>10.1f}  {ours['fit']:>11.1f}  {ratios[-1]:>5.2f}x  "
              f"{book['total']:>12.1f}  {ours['total']:>13.1f}")
    print(f"median ratio: {statistics.median(ratios):.2f}x faster on lenet.d2l "
          "(one epoch of trainer.fit: training and validation)")


if __name__ == "__main__":
    main()
