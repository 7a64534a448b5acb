"""`lenet sweep`, `lenet compare` and `lenet bench`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import non_negative_int, positive_int


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "sweep", help="run a grid, or a search with early stopping, from a TOML file; "
                      "resumable",
        description="Run every unfinished run of a sweep file (see sweeps/*.toml) in worker "
                    "processes, then write a comparison table and plots. A file with a "
                    "[search] samples its [space] (TPE or random) and stops poor trials early "
                    "(ASHA): with Optuna here (one trial at a time, the study in "
                    "OUT/NAME/study.db) or with Ray Tune under --ray. Rerun the same "
                    "command after an interruption to finish the sweep.")
    p.add_argument("spec", metavar="SPEC.toml")
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="worker processes [as many as cores and memory allow]; 0 runs "
                        "in this process")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run each run as a Ray task instead of in worker processes: on the "
                        "cluster at ADDRESS (host:port, ray://host:port, or auto for the one "
                        "`ray start` runs here), or, without ADDRESS, on a Ray started here "
                        "for the sweep; CPUs/GPUs per run from the file's [resources] "
                        "(needs pip install 'lenet[ray]')")
    p.set_defaults(handler=run_sweep)

    p = commands.add_parser("compare", help="a comparison table and overlaid learning curves")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", metavar="FILE.png",
                   help="also draw the runs' learning curves, overlaid, into this file")
    p.add_argument("--top", type=positive_int, help="only the best N runs")
    p.set_defaults(handler=run_compare)

    p = commands.add_parser(
        "bench", help="measure training and inference speed on this machine",
        description="Training speed against the book's pipeline, the fastest configuration, "
                    "the FLOP bound, time to 0.90 accuracy and inference latency, with the "
                    "conditions. Run it on an otherwise idle machine.")
    p.add_argument("--rounds", type=positive_int, default=2,
                   help="alternating epochs of the book's pipeline and lenet [2]")
    p.add_argument("--quick", action="store_true",
                   help="skip the runs that train to an accuracy (about 1.5 minutes)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--native-variants", action="store_true",
                   help="instead: the fused kernel at each ISA level this CPU runs (native, "
                        "x86-64-v4/v3/v2) vs PyTorch's layers, and the book recipe's speed "
                        "with it vs LENET_NATIVE=0 (a few minutes)")
    p.set_defaults(handler=run_bench)


def run_sweep(args: argparse.Namespace) -> int:
    from ..sweeps.sweep import run_sweep as sweep

    sweep(args.spec, workers=args.workers, ray=args.ray)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from ..sweeps.compare import (
        markdown_table,
        plot_compared_curves,
        sort_by_accuracy,
        summarize_run,
    )

    ranked = sort_by_accuracy([summarize_run(r) for r in args.runs])[:args.top]
    print(markdown_table(ranked))
    if args.out:
        figure = plot_compared_curves([s.path for s in ranked], Path(args.out))
        print(f"\nlearning curves: {figure}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .. import bench

    if args.native_variants:
        from ..bench import native_variants

        native_variants.run(rounds=args.rounds, json_path=args.json)
        return 0
    bench.run(rounds=args.rounds, quick=args.quick, json_path=args.json)
    return 0
