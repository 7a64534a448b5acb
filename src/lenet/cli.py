"""The `lenet` command: train, summary, models, data.

Every expected failure (bad option, missing data, unwritable directory) ends
with one clear `lenet: error: ...` message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import fields

from . import __version__
from .config import OPTIMIZERS, SCHEDULES, TrainConfig
from .console import Console
from .datasets import DATASETS
from .device import DEVICE_CHOICES
from .errors import LenetError
from .models import MODELS, build_model, get_model_config
from .summary import format_summary, summarize


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def size_pair(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        sizes = [positive_int(p) for p in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected SIZE or H,W, got {text!r}") from None
    if len(sizes) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected SIZE or H,W, got {text!r}")
    return (sizes[0], sizes[-1])


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = commands.add_parser(
        "train", help="train a model and record the run",
        description="Train a LeNet-family model. Defaults are the book's recipe: LeNet-5, "
                    "SGD lr 0.1, batch 128, 10 epochs on Fashion-MNIST.",
        argument_default=None)
    recipe = p.add_argument_group("recipe")
    recipe.add_argument("--model", choices=list(MODELS), help=f"model variant [{d.model}]")
    recipe.add_argument("--dataset", choices=list(DATASETS), help=f"dataset [{d.dataset}]")
    recipe.add_argument("--epochs", type=positive_int, help=f"epochs [{d.epochs}]")
    recipe.add_argument("--batch-size", type=positive_int, help=f"minibatch size [{d.batch_size}]")
    recipe.add_argument("--lr", type=positive_float, help=f"(peak) learning rate [{d.lr}]")
    recipe.add_argument("--optimizer", choices=OPTIMIZERS, help=f"optimizer [{d.optimizer}]")
    recipe.add_argument("--momentum", type=non_negative_float,
                        help=f"momentum for sgd/rmsprop [{d.momentum}]")
    recipe.add_argument("--nesterov", action="store_true", default=None,
                        help="Nesterov momentum (sgd)")
    recipe.add_argument("--weight-decay", type=non_negative_float,
                        help=f"L2 weight decay [{d.weight_decay}]")
    recipe.add_argument("--schedule", choices=SCHEDULES,
                        help=f"learning-rate schedule, stepped per batch [{d.schedule}]")
    recipe.add_argument("--clip-grad", type=positive_float, metavar="NORM",
                        help="clip the global gradient norm to NORM [off]")
    recipe.add_argument("--seed", type=int, help=f"seed for init, shuffling, dropout [{d.seed}]")
    recipe.add_argument("--val-split", type=fraction, metavar="F",
                        help="validate on a held-out fraction F of train instead of test [off]")
    recipe.add_argument("--resize", type=size_pair, metavar="H[,W]",
                        help="resize images (the book's resize option) [off]")
    where = p.add_argument_group("where and how")
    where.add_argument("--device", choices=DEVICE_CHOICES,
                       help=f"auto picks CUDA, then MPS, then CPU [{d.device}]")
    where.add_argument("--threads", type=positive_int, help="CPU threads [torch's default]")
    where.add_argument("--data-dir", metavar="DIR", help="directory holding the IDX files")
    where.add_argument("--out-dir", metavar="DIR", help=f"where run directories go [{d.out_dir}]")
    where.add_argument("--name", help="run directory name [MODEL-TIMESTAMP]")
    where.add_argument("--resume", metavar="RUN_DIR",
                       help="continue an interrupted run (may change --epochs, --device, "
                            "--threads, --data-dir)")
    where.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                       help="no progress bar (it shows by default on a terminal)")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from . import runner  # torch-heavy imports only for commands that need them

    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    console = Console(progress=args.progress)
    if args.resume:
        runner.resume(args.resume, console=console, **given)
    else:
        runner.train(TrainConfig(**given), console=console)
    return 0


def run_summary(args: argparse.Namespace) -> int:
    model = build_model(get_model_config(args.model), seed=0)
    shape = (1, model.config.in_channels, *model.config.input_size)
    print(f"{args.model}: input {shape}")
    print(format_summary(summarize(model, shape)))
    return 0


def run_models(args: argparse.Namespace) -> int:
    for name, config in MODELS.items():
        model = build_model(config, seed=0)
        print(f"{name:16s} {model.num_parameters:>9,} parameters  "
              f"activation={config.activation} pool={config.pool} channels={config.channels} "
              f"dense={config.dense}")
    return 0


def run_data_fetch(args: argparse.Namespace) -> int:
    from . import sources

    dataset = sources.load(args.dataset, args.data_dir, download=not args.offline)
    print(f"{dataset.spec.title}: {len(dataset.train):,} train and {len(dataset.test):,} test "
          f"images, checksums verified, in {dataset.source}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lenet", description="Build, train and inspect LeNet-family CNNs on Fashion-MNIST.")
    parser.add_argument("--version", action="version", version=f"lenet {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_train_parser(commands)

    p = commands.add_parser("summary", help="per-layer output shapes, parameters, mult-adds")
    p.add_argument("--model", default="lenet5", choices=list(MODELS), help="model variant")
    p.set_defaults(handler=run_summary)

    p = commands.add_parser("models", help="list the registered model variants")
    p.set_defaults(handler=run_models)

    p = commands.add_parser("data", help="dataset tools")
    data = p.add_subparsers(title="data commands", metavar="ACTION", required=True)
    p = data.add_parser("fetch", help="find (or download) a dataset and verify its checksums")
    p.add_argument("--dataset", default="fashion-mnist", choices=list(DATASETS))
    p.add_argument("--data-dir", metavar="DIR", help="look here first")
    p.add_argument("--offline", action="store_true", help="never download")
    p.set_defaults(handler=run_data_fetch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except LenetError as e:
        print(f"lenet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lenet: interrupted", file=sys.stderr)
        return 130
