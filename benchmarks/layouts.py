"""The record models' training step on PyTorch's default path (the layers as built,
contiguous NCHW) against the path `prepare_model` picks (the fused kernel where it covers the
model, else the layout the layout guard measured faster: lenet/native/layout.py), in one run.

    python benchmarks/layouts.py [--batch 128] [--rounds 20] [--threads N]

Per model: examples/s of forward+backward+SGD step in each layout, alternating the two
(the order swapped every round, medians), the ratio, and what the guard decided. Run it on
an idle machine; the CPU model and the threads are printed with the figures.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from alternating import alternate, parse, parser  # (this folder: the scripts run from it)

from lenet.models.network import build_model
from lenet.native import layout
from lenet.native.fastpath import kernel_path, prepare_model
from lenet.run.directory import cpu_model
from lenet.training.config import RECIPES, TrainConfig

MODELS = ("best-100k", "best-62k", "speed-92")  # recipes whose models are compared


def stepper(recipe: str, batch: int, guarded: bool, autocast: torch.dtype | None = None,
            compiled: bool = False):
    """A training step of `recipe`'s model: as built, or as `prepare_model` lays it out
    (`guarded`); under autocast to `autocast`; through torch.compile (compiled by one step
    here, before any timing)."""
    config = TrainConfig.from_recipe(recipe)
    model = build_model(config.model_config(num_classes=10, image_size=(28, 28)), seed=0)
    if guarded:  # else PyTorch's default: the layers as built, contiguous
        model = prepare_model(model, torch.device("cpu"), batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 1, 28, 28), generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    forward = torch.compile(model) if compiled else model

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=bool(autocast)):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()

    if compiled:
        step()
    return model, step


def command_line(doc: str | None) -> argparse.Namespace:
    """--batch, --rounds, --threads parsed (this script's and pytorch_paths.py's), and the
    line that says what the figures were measured on."""
    made = parser(doc, rounds=20)
    made.add_argument("--batch", type=int, default=128)
    args = parse(made)
    print(f"CPU: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}")
    return args


def main() -> int:
    args = command_line(__doc__)
    for recipe in (r for r in MODELS if r in RECIPES):
        default_model, default = stepper(recipe, args.batch, guarded=False)
        model, picked = stepper(recipe, args.batch, guarded=True)
        nhwc = model.conv2.weight.is_contiguous(memory_format=torch.channels_last) and not \
            model.conv2.weight.is_contiguous()
        t_default, t_picked = alternate(default, picked, args.rounds, warmups=2)
        fused = kernel_path(model) is not None
        choice = ("fused kernel" if fused else "channels-last" if nhwc else "contiguous")
        why = "" if fused else " (" + layout.decide(
            model, (1, 28, 28), args.batch).why + ")"
        print(f"{recipe} ({model.num_parameters:,} parameters): default "
              f"{args.batch / t_default:,.0f} ex/s, prepared [{choice}] "
              f"{args.batch / t_picked:,.0f} ex/s: {t_default / t_picked:.2f}x{why}", flush=True)
        del default_model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
