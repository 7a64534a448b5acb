"""`lenet train`, `lenet summary`, `lenet models`."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..base.device import DEVICE_CHOICES
from ..data.datasets import DATASETS
from ..models.config import MODELS
from ..models.settings import parse_settings, resolve_model_config, setting_names
from ..training.config import (
    AUGMENTATIONS,
    CONV_PRECISIONS,
    OPTIMIZERS,
    PRECISIONS,
    RECIPES,
    SCHEDULES,
    TEST_TIME_AUGMENTATIONS,
    TrainConfig,
)
from .args import (
    fraction,
    non_negative_float,
    non_negative_fraction,
    non_negative_int,
    positive_float,
    positive_int,
    share,
    size_pair,
)
from .launch import launch


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = TrainConfig()
    p = commands.add_parser(
        "train", help="train a model and record the run",
        description="Train a LeNet-family model. Defaults are the book's recipe: LeNet-5, "
                    "SGD lr 0.1, batch 128, 10 epochs on Fashion-MNIST.",
        argument_default=None)
    recipe = p.add_argument_group("recipe")
    recipe.add_argument("--recipe", choices=list(RECIPES),
                        help="start from a named recipe; other options change it [book]")
    recipe.add_argument("--model", choices=list(MODELS), help=f"model variant [{d.model}]")
    recipe.add_argument("--set", dest="model_settings", action="append", metavar="KEY=VALUE",
                        help=f"change the model: {', '.join(setting_names())} (repeatable)")
    recipe.add_argument("--dataset", metavar="NAME|DIR",
                        help=f"{' or '.join(DATASETS)}, or a directory with the four IDX files "
                             f"(and optional classes.txt) [{d.dataset}]")
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
    recipe.add_argument("--augment", choices=[a for a in AUGMENTATIONS if a],
                        help="random left-right flips, shifts of up to 2 pixels and/or "
                             "erased rectangles (random erasing), joined by + [off]")
    recipe.add_argument("--label-smoothing", type=non_negative_fraction, metavar="E",
                        help="train towards 1-E on the true class and E/classes on each class "
                             f"[{d.label_smoothing}]")
    recipe.add_argument("--tta", choices=[a for a in TEST_TIME_AUGMENTATIONS if a],
                        help="test-time augmentation: evaluate each image and its mirror "
                             "image (flip), and both moved one pixel up-left and down-right "
                             "(flip+shift), averaging their logits [off]")
    recipe.add_argument("--precision", choices=PRECISIONS,
                        help="autocast: bf16 or fp16 (with loss scaling) for convolutions "
                             "and matmuls, for GPUs; on a CPU both run PyTorch's kernels "
                             "instead of the fused one, slower for LeNet-5; bf16 trained the "
                             "models the kernel does not fuse 1.1-1.25x faster on a Zen 4 "
                             "(AVX512-BF16); CPUs without bf16 instructions emulate it "
                             f"[{d.precision}]")
    recipe.add_argument("--conv-precision", choices=CONV_PRECISIONS,
                        help="the fused kernel's convolutions: ieee multiplies in float32; "
                             "bf16 multiplies bfloat16 roundings of their operands and sums "
                             "in float32 in training steps (tensors stay float32, as "
                             "PyTorch's fp32_precision bf16; evaluation stays float32), where "
                             "the CPU has AVX512-BF16: its training step 1.3x faster on a "
                             "Zen 4; other CPUs multiply in float32 "
                             f"[{d.conv_precision}]")
    recipe.add_argument("--freeze-first-block", type=share, metavar="SHARE",
                        help="FreezeOut: after this share of the training steps (0-1) the "
                             "first conv block (conv1 and its batch norm) stops learning, and "
                             "its gradients are no longer computed (the fused kernel's "
                             "backward pass about 45%% cheaper); 1: never (a recipe's "
                             f"freeze off) [{d.freeze_first_block or 'off'}]")
    recipe.add_argument("--target-accuracy", type=fraction, metavar="ACC",
                        help="stop after the first epoch whose test (or val) accuracy reaches "
                             "ACC [off]")
    recipe.add_argument("--eval-every", type=positive_int, metavar="N",
                        help="evaluate on the test (or val) split after every N-th epoch and "
                             "after the last; the other epochs' rows leave those columns "
                             f"empty [{d.eval_every}]")
    recipe.add_argument("--ood-holdout", type=non_negative_int, metavar="N",
                        help="keep N training images out of training to calibrate the "
                             "out-of-distribution thresholds on [0 for the book's recipe, "
                             "2000 for the others]")
    where = p.add_argument_group("where and how")
    where.add_argument("--device", choices=DEVICE_CHOICES,
                       help=f"auto picks CUDA, then MPS, then CPU [{d.device}]")
    where.add_argument("--threads", type=positive_int, help="CPU threads [torch's default]")
    where.add_argument("--nproc", type=positive_int, metavar="N",
                       help="train in N processes on this machine (DistributedDataParallel; "
                            "--batch-size stays the global batch, split among them): "
                            "torchrun --standalone --nproc-per-node N -m lenet train ... [1]")
    where.add_argument("--data-dir", metavar="DIR", help="directory holding the IDX files")
    where.add_argument("--out-dir", metavar="DIR", help=f"where run directories go [{d.out_dir}]")
    where.add_argument("--name", help="run directory name [MODEL-TIMESTAMP]")
    where.add_argument("--resume", metavar="RUN",
                       help="the old spelling of `lenet resume RUN`, kept for one release")
    where.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                       help="no progress bar (it shows by default on a terminal)")
    where.add_argument("--tensorboard", action="store_true", default=None,
                       help="also log the metrics for TensorBoard, in RUN/tensorboard")
    p.set_defaults(handler=run_train)

    p = commands.add_parser(
        "resume", help="continue an interrupted run, or train a finished one for more epochs",
        description="Continue RUN from its checkpoint, bit-identical to a run that was never "
                    "interrupted. Only where it runs, how often it is evaluated and, for a "
                    "constant learning rate, the number of epochs may change.")
    p.add_argument("run", metavar="RUN", help="a run directory (or its checkpoint file)")
    p.add_argument("--epochs", type=positive_int, help="train on to this many epochs in all")
    p.add_argument("--device", choices=DEVICE_CHOICES, help="[the run's]")
    p.add_argument("--threads", type=positive_int, help="CPU threads [torch's default]")
    p.add_argument("--eval-every", type=positive_int, metavar="N",
                   help="evaluate after every N-th epoch from here on, and after the last "
                        "[the run's]")
    p.add_argument("--nproc", type=positive_int, metavar="N",
                   help="continue in N processes (any number: progress is kept in global "
                        "batches) [1]")
    p.add_argument("--data-dir", metavar="DIR", help="directory holding the IDX files")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (it shows by default on a terminal)")
    p.set_defaults(handler=run_resume)

    p = commands.add_parser("summary", help="per-layer output shapes, parameters, mult-adds")
    p.add_argument("--model", default="lenet5", choices=list(MODELS), help="model variant")
    p.add_argument("--set", dest="model_settings", action="append", metavar="KEY=VALUE",
                   default=[], help="change the model, as for train")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the network as a diagram")
    p.set_defaults(handler=run_summary)

    p = commands.add_parser("models", help="list the registered model variants")
    p.set_defaults(handler=run_models)


def run_train(args: argparse.Namespace) -> int:
    # torch-heavy imports only in the commands that need them: `--help` stays fast
    from ..run.console import Console
    from ..run.record import Run
    from ..training.distributed import World, check_batch
    from ..training.freeze import check_processes

    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "model_settings" in given:
        given["model_settings"] = parse_settings(given["model_settings"])
    console = Console(progress=args.progress)
    if args.resume:
        if args.nproc and args.nproc > 1:
            return launch(args.nproc, args.argv)
        Run.open(args.resume, **given).fit(console=console)
    else:
        config = TrainConfig.from_recipe(**given)  # options checked before any launch
        if args.nproc and args.nproc > 1:
            check_batch(config.batch_size, 0, World(size=args.nproc))
            check_processes(config.freeze_first_block, args.nproc)
            return launch(args.nproc, args.argv)
        Run.create(config).fit(console=console)
    return 0


def run_resume(args: argparse.Namespace) -> int:
    from ..run.console import Console
    from ..run.record import Run

    if args.nproc and args.nproc > 1:
        return launch(args.nproc, args.argv)
    run = Run.open(args.run, epochs=args.epochs, device=args.device, threads=args.threads,
                   data_dir=args.data_dir, eval_every=args.eval_every)
    run.fit(console=Console(progress=args.progress))
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from ..models.network import build_model
    from ..models.summary import format_summary, summarize

    config = resolve_model_config(args.model, parse_settings(args.model_settings))
    model = build_model(config, seed=0)
    shape = (1, model.config.in_channels, *model.config.input_size)
    print(f"{args.model}: input {shape}")
    print(format_summary(summarize(model, shape)))
    if args.plot:
        from ..models.diagram import plot_network

        print(f"diagram: {plot_network(model, args.plot, shape, title=args.model)}")
    return 0


def run_models(args: argparse.Namespace) -> int:
    from ..models.network import build_model

    for name, config in MODELS.items():
        model = build_model(config, seed=0)
        print(f"{name:16s} {model.num_parameters:>9,} parameters  "
              f"activation={config.activation} pool={config.pool} channels={config.channels} "
              f"dense={config.dense}")
    return 0
