"""The fused kernel per ISA level: what users with other CPUs get (issue 11).

For each variant this CPU can run (native, then x86-64-v4, v3 and v2 on x86-64), one worker
process builds the kernel with LENET_NATIVE_MARCH set to it and measures, alternating the
contenders within that process:

1. LeNet-5's conv blocks, forward+backward at batch 128, fused vs PyTorch's layers (as
   `prepare_model` lays them out when unfused), at 1 and 2 threads, for the book's recipe
   (sigmoid, average pooling) and the modern one (ReLU, max pooling): the guard's own
   measurement (medians of alternating calls);
2. the book recipe's training throughput (SGD 0.1, batch 128), a slice of an epoch, with
   the kernel vs LENET_NATIVE=0 (the same model, its layers one by one).

    python benchmarks/native_variants.py [--steps 100] [--rounds 2] [--json FILE]
    lenet bench --native-variants

Run it on an otherwise idle machine; the numbers are ratios measured in one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..base.atomic import write_text
from ..base.tables import format_row

LEVELS = ("x86-64-v4", "x86-64-v3", "x86-64-v2")
RECIPES = (("lenet5", "sigmoid/avg"), ("lenet5-modern", "relu/max"))


def variants() -> list[str]:
    """native, then the x86-64 levels this CPU runs (best first)."""
    from ..native import build

    found = ["native"]
    if platform.machine() in ("x86_64", "AMD64"):
        for level in LEVELS:
            try:
                build.toolchain(march=level)
                found.append(level)
            except build.BuildError:
                pass
    return found


def worker(variant: str, steps: int, rounds: int, budget_s: float) -> dict[str, Any]:
    """Measure one variant in this process (LENET_NATIVE_MARCH already set by the parent)."""
    import torch

    from ..data import sources
    from ..data.loader import make_loaders
    from ..models.config import MODELS
    from ..models.network import build_model
    from ..native import guard, lenet5
    from ..native.fastpath import kernel_path, prepare_model
    from ..training.config import TrainConfig
    from ..training.loop import train_one_epoch
    from ..training.optim import build_optimizer

    if not lenet5.available():
        return {"variant": variant, "skipped": lenet5.why_not()}
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    result: dict[str, Any] = {"variant": variant, "kernel": lenet5.describe(),
                              "vector_width": lenet5.vector_width(), "blocks": []}
    for n_threads in (1, 2):
        torch.set_num_threads(n_threads)
        for name, recipe in RECIPES:
            model = prepare_model(build_model(MODELS[name], seed=0), cpu)
            path = kernel_path(model)
            assert path is not None  # LeNet-5's blocks on the CPU: the kernel takes them
            fused_s, torch_s, n = guard.measure(
                *guard.contenders(path.kernel, 128, True), budget_s=budget_s)
            result["blocks"].append({"threads": n_threads, "recipe": recipe, "rounds": n,
                                     "fused_ms": fused_s * 1e3, "torch_ms": torch_s * 1e3})
    torch.set_num_threads(threads)

    config = TrainConfig()  # the book's recipe
    data = sources.load("fashion-mnist")
    loaders = make_loaders(data, cpu, batch_size=config.batch_size, seed=0)
    model = prepare_model(build_model(MODELS["lenet5"], seed=0), cpu)
    optim = build_optimizer(model.parameters(), config)
    # "1": the kernel forced; "0": PyTorch's layers; "": the default, where the guard decides
    # (it measures in the warm-up round, and its decisions stay cached in this build's file)
    speeds: dict[str, list[float]] = {"1": [], "0": [], "": []}
    try:
        for r in range(rounds + 1):  # the first round warms up
            for mode in (("1", "0", "") if r % 2 else ("", "0", "1")):
                os.environ["LENET_NATIVE"] = mode  # read at every step ("" = unset)
                totals = train_one_epoch(model, loaders.train, optim, should_stop=_after(steps))
                if r:
                    speeds[mode].append(totals.examples_per_sec)
    finally:
        os.environ["LENET_NATIVE"] = "1"  # as the parent set it
    result["epoch"] = {"steps": steps, "threads": threads, "kernel_examples_per_sec": speeds["1"],
                       "pytorch_examples_per_sec": speeds["0"],
                       "default_examples_per_sec": speeds[""],
                       "guard": guard.current().cached()}  # the measured decisions
    return result


def _after(steps: int) -> Callable[[], bool]:
    calls = itertools.count(1)
    return lambda: next(calls) >= steps


# The per-block table, printed a row as each variant's worker reports.
COLUMNS = ("variant", "floats", "threads", "recipe", "fused ms", "PyTorch ms", "ratio")
WIDTHS = (10, 6, 7, 12, 9, 10, 6)
ALIGN = "lrrlrrr"


def run(*, steps: int = 100, rounds: int = 2, budget_s: float = 1.5,
        only: list[str] | None = None, say: Callable[[str], None] = print,
        json_path: str | Path | None = None) -> list[dict[str, Any]]:
    """Measure every variant, each in its own process; print a table; return the results."""
    from ..native import build, lenet5
    from ..run.directory import cpu_model

    found = variants()
    say(f"CPU: {cpu_model()} ({platform.machine()}); highest level it runs: "
        f"{found[1] if len(found) > 1 else 'native only'}")
    say(f"kernel state (unforced): {lenet5.describe()}")
    say("")
    say(format_row(COLUMNS, WIDTHS, ALIGN))
    results = []
    for variant in only or found:
        env = {**os.environ, "LENET_NATIVE": "1"}
        env.pop(build.MARCH_ENV, None)
        if variant != "native":
            env[build.MARCH_ENV] = variant
        child = subprocess.run(
            [sys.executable, "-m", "lenet.bench.native_variants", "--worker", variant,
             "--steps", str(steps), "--rounds", str(rounds), "--budget", str(budget_s)],
            env=env, capture_output=True, text=True)
        lines = child.stdout.strip().splitlines()
        result: dict[str, Any]
        if child.returncode != 0 or not lines:
            result = {"variant": variant, "skipped": (child.stderr.strip().splitlines()
                                                      or ["worker failed"])[-1]}
        else:
            result = json.loads(lines[-1])
        results.append(result)
        if "skipped" in result:
            say(f"{variant:<{WIDTHS[0]}} skipped: {result['skipped']}")
            continue
        for row in result["blocks"]:
            say(format_row((variant, str(result["vector_width"]), str(row["threads"]),
                            row["recipe"], f"{row['fused_ms']:.2f}", f"{row['torch_ms']:.2f}",
                            f"{row['torch_ms'] / row['fused_ms']:.2f}x"), WIDTHS, ALIGN))
    say(f"\nbook recipe (SGD 0.1, batch 128), {steps} steps x {rounds} rounds alternating, "
        "examples/s: the kernel forced, the default (the guard decides), LENET_NATIVE=0")
    for result in results:
        if "skipped" not in result:
            epoch = result["epoch"]
            kernel = statistics.median(epoch["kernel_examples_per_sec"])
            plain = statistics.median(epoch["pytorch_examples_per_sec"])
            default = statistics.median(epoch["default_examples_per_sec"])
            say(f"{result['variant']:<10} forced {kernel:>7,.0f} ({kernel / plain:.2f}x), "
                f"default {default:>7,.0f} ({default / plain:.2f}x), PyTorch {plain:>7,.0f} "
                f"({epoch['threads']} threads)")
    if json_path:
        write_text(json_path, json.dumps(results, indent=2) + "\n")
        say(f"\nwritten: {json_path}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps per slice [100]")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds [2]")
    parser.add_argument("--budget", type=float, default=1.5,
                        help="seconds per fused-vs-PyTorch measurement [1.5]")
    parser.add_argument("--variants", help="comma-separated, e.g. native,x86-64-v3 [all]")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.rounds, args.budget)))
        return 0
    run(steps=args.steps, rounds=args.rounds, budget_s=args.budget,
        only=args.variants.split(",") if args.variants else None, json_path=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
