"""`lenet ood RUN`, `lenet ood fit RUN`, `lenet ood RUN --benchmark`: inputs unlike the data.

- `lenet ood RUN`: the chapter's exercise: confidence, predicted classes and
  layer statistics for test images, noise, blanks and photos, and the share
  of each the run's default detector flags;
- `lenet ood fit RUN`: fit the run's detectors (runs trained before lenet
  fitted them at the end of training, or stopped early);
- `lenet ood RUN --benchmark`: AUROC and FPR@95TPR of every detector against
  the offline OOD sets, as a markdown table, JSON and a ROC figure in RUN.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..base.device import DEVICE_CHOICES
from ..errors import LenetError
from ..ood.choices import DETECTORS
from ..predict.choices import BACKENDS
from .args import fraction, positive_int


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help = "out-of-distribution inputs: the exercise, fitting the detectors, the benchmark"
    p = commands.add_parser("ood", help=help, description=__doc__.split("\n\n", 1)[1],
                            usage="lenet ood [fit] RUN [options]",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run directory or checkpoint file")
    p.add_argument("fit_run", nargs="?", help=argparse.SUPPRESS)  # `lenet ood fit RUN`
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--data-dir", metavar="DIR", help="where the run's dataset is")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="inference engine, as for predict [auto]")
    p.add_argument("--benchmark", action="store_true",
                   help="AUROC and FPR at 95%% TPR of every detector against offline OOD sets")
    p.add_argument("--n", type=positive_int, default=500,
                   help="images per random group or set [500]")
    p.add_argument("--seed", type=int, default=0, help="seed of the random OOD sets [0]")
    p.add_argument("--no-photos", dest="photos", action="store_false",
                   help="the exercise without scikit-image's photos")
    p.add_argument("--out", metavar="FILE.png", help="the exercise's figure [RUN/ood.png]")
    add_detector_options(p)
    p.set_defaults(handler=run_ood)


def add_detector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", "--score", dest="detector", choices=DETECTORS,
                   help="out-of-distribution detector [the run's default: combined]")
    p.add_argument("--tpr", type=fraction,
                   help="share of held-out in-distribution images the threshold lets "
                        "through [0.95]")


def open_run(args: argparse.Namespace) -> Any:
    from ..run.record import Run

    return Run.open(args.run, device=args.device, data_dir=args.data_dir)


def note(text: str) -> None:
    print(f"lenet: note: {text}", file=sys.stderr)


def run_ood(args: argparse.Namespace) -> int:
    if args.run == "fit" and args.fit_run:
        args.run = args.fit_run
        return run_fit(args)
    if args.fit_run:
        raise LenetError(f"unexpected argument {args.fit_run!r}: lenet ood [fit] RUN")
    if args.benchmark:
        return run_benchmark(args)
    return run_exercise(args)


def run_fit(args: argparse.Namespace) -> int:
    import time

    from ..ood.fitted import ARRAYS, META
    from ..ood.runs import fit

    run = open_run(args)
    started = time.perf_counter()
    train, payload = run.dataset.train, run.checkpoint()
    fitted = fit(run.path, run.predictor("torch"), train.images, train.labels,
                payload.get("train_config", {}), payload.get("epoch"))
    images, seconds = fitted.record["fit"]["images"], time.perf_counter() - started
    print(f"fitted {len(fitted.names)} OOD detectors on {images:,} training images in "
          f"{seconds:.1f} s; thresholds at {fitted.tpr:.0%} TPR, calibrated on "
          f"{fitted.record['calibration']['note']}")
    for name in fitted.names:
        mark = "  (default)" if name == fitted.default else ""
        print(f"  {name:12s} threshold {fitted.threshold(name):.4f}{mark}")
    print(f"saved: {run.path / META}, {run.path / ARRAYS}")
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    import torch

    from .. import __version__
    from ..ood.runs import BENCHMARK_FILES, run_benchmark
    from ..run.directory import cpu_model

    run = open_run(args)
    check = run.ood_detector(backend=args.backend).check
    payload = run.checkpoint()
    config = payload.get("train_config", {})
    conditions = {"run": str(run.path), "recipe": config.get("recipe"),
                  "model": payload.get("model_name"), "seed": config.get("seed"),
                  "epochs": payload.get("epoch"), "ood_holdout": config.get("ood_holdout", 0),
                  "cpu": cpu_model(), "torch_threads": torch.get_num_threads(),
                  "backend": check.predictor.backend, "lenet": __version__}
    title = (f"{conditions['model']} ({conditions['recipe']} recipe, seed {conditions['seed']}): "
             "Fashion-MNIST test vs offline OOD sets")
    result = run_benchmark(check, run.dataset.test.images, run.path, n=args.n,
                           seed=args.seed, title=title, conditions=conditions)
    from ..ood.benchmark import format_markdown

    print(format_markdown(result, check.default))
    print(f"\nin-distribution: the {len(run.dataset.test):,} test images; thresholds "
          f"calibrated on {check.fitted.record.get('calibration', {}).get('note')}; "
          f"default detector: {check.default}")
    print("files: " + ", ".join(str(run.path / f) for f in BENCHMARK_FILES))
    return 0


def run_exercise(args: argparse.Namespace) -> int:
    from ..ood.exercise import analyse, format_reports, photo_originals, plot_reports, probe_groups

    run = open_run(args)
    check = run.ood_detector(backend=args.backend).check
    fitted = check.fitted
    detector = args.detector or fitted.default
    threshold = fitted.threshold(detector, args.tpr)
    groups = probe_groups(run.dataset.test.images, n=args.n, with_photos=args.photos)
    # The photos as `lenet predict` checks a file: the photo check reads their originals.
    originals = photo_originals(groups["test images"].shape[1:]) if args.photos else {}
    reports = analyse(check.predictor, groups, threshold, detector,
                      flag=lambda name, images: [v.out_of_distribution for v in check.check(
                          images, detector, args.tpr, originals.get(name))[1]])
    classes = run.classes
    tpr = args.tpr or fitted.tpr
    flag_note = (f"{detector} score below {threshold:.4f}, the threshold {tpr:.0%} of held-out "
                 f"in-distribution images pass")
    print(format_reports(reports, classes, threshold, detector, tpr, flag_note))
    png = plot_reports(reports, groups, classes, run.output(args.out, "ood.png"),
                       fitted.threshold("msp", args.tpr),
                       f"{run.config.model} on inputs unlike its training data")
    table = run.dir.write_json("ood.json", {
        "detector": detector, "tpr": tpr, "threshold": threshold,
        "groups": [{**r.__dict__, "predicted": r.predicted.tolist()} for r in reports]})
    print(f"\nfigure: {png}\ntable: {table}")
    return 0
