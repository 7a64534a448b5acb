"""The optimizer's step on a CPU: PyTorch's default there (a Python loop over the parameter
tensors) against the multi-tensor (`foreach`) update that lenet.training.optim asks for,
which gives the same numbers to the bit (tests/training/test_optim.py).

    python benchmarks/optimizer_step.py [--rounds 9] [--threads N]

Per recipe: the median microseconds of one step of each (1,000 steps a round, alternating,
the order swapped every round) and the ratio, for the recipe's model and optimizer. Run it
on an idle machine; the CPU model and the threads are printed with them.
"""

from __future__ import annotations

from functools import partial

import torch
from alternating import alternate, parse, parser  # (this folder: the scripts run from it)

from lenet.models.network import build_model
from lenet.run.directory import cpu_model
from lenet.training.config import TrainConfig
from lenet.training.optim import build_optimizer

RECIPES = ("book", "speed-90", "speed-92", "best-100k")
STEPS = 1_000


def steps(optimizer: torch.optim.Optimizer) -> None:
    for _ in range(STEPS):
        optimizer.step()


def main() -> int:
    args = parse(parser(__doc__, rounds=9))
    print(f"CPU: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for recipe in RECIPES:
        config = TrainConfig(recipe=recipe)
        model = build_model(config.model_config(num_classes=10, image_size=(28, 28)))
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        ours = build_optimizer(model.parameters(), config)
        loop = type(ours)(model.parameters(), **{**ours.defaults, "foreach": False})

        t_loop, t_foreach = alternate(partial(steps, loop), partial(steps, ours), args.rounds)
        tensors = sum(1 for _ in model.parameters())
        print(f"{recipe:10s} ({config.optimizer}, {tensors} tensors): loop "
              f"{t_loop / STEPS * 1e6:6.1f} us, foreach {t_foreach / STEPS * 1e6:6.1f} us a step: "
              f"{t_loop / t_foreach:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
