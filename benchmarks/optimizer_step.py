"""The optimizer's step on a CPU, three ways: PyTorch's default there (a Python loop over the
parameter tensors), its multi-tensor (`foreach`) update, and lenet's SGD (lenet.training.optim:
the foreach update's floats in one native pass a tensor, lenet.native.sgd), which the recipes
with momentum use; all three give the same numbers to the bit (tests/training/test_optim.py,
tests/native/test_sgd.py).

    python benchmarks/optimizer_step.py [--rounds 9] [--threads N]

Per recipe, two measurements:
- alone: the median microseconds of one step (1,000 steps a round, the contenders in turns,
  the order swapped every round): what the optimizer costs with its tensors in the cache;
- in a training step: the recipe's prepared model trains on random batches, one copy per
  contender (the same work), 40 steps a round in turns; the median time of the optimizer's
  step inside them and of the whole step. After the fused kernel's backward pass the
  parameters have left the cache, and the step costs 2-3x what it does alone.
Run it on an idle machine; the CPU model and the threads are printed with them.
"""

from __future__ import annotations

import copy
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
from alternating import alternate, parse, parser  # (this folder: the scripts run from it)

from lenet.models.network import build_model
from lenet.native import sgd
from lenet.native.fastpath import prepare_model
from lenet.run.directory import cpu_model
from lenet.training.config import TrainConfig
from lenet.training.optim import SGD, build_optimizer

RECIPES = ("book", "speed-90", "speed-92", "best-100k")
STEPS = 1_000
TRAINING_STEPS = 40


def steps(optimizer: torch.optim.Optimizer) -> None:
    for _ in range(STEPS):
        optimizer.step()


def alone(config: TrainConfig, rounds: int) -> str:
    model = build_model(config.model_config(num_classes=10, image_size=(28, 28)))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    ours = build_optimizer(model.parameters(), config)
    native = type(ours) is SGD  # lenet's (SGD with momentum), else PyTorch's own
    foreach = torch.optim.SGD(model.parameters(), **ours.defaults) if native else ours
    loop = type(foreach)(model.parameters(), **{**foreach.defaults, "foreach": False})
    t_loop, t_foreach = alternate(partial(steps, loop), partial(steps, foreach), rounds)
    line = (f"alone: loop {t_loop / STEPS * 1e6:6.1f} us, foreach {t_foreach / STEPS * 1e6:6.1f} "
            f"us ({t_loop / t_foreach:.2f}x)")
    if native:
        t_foreach, t_ours = alternate(partial(steps, foreach), partial(steps, ours), rounds)
        line += f", lenet {t_ours / STEPS * 1e6:6.1f} us ({t_foreach / t_ours:.2f}x foreach)"
    return line


def in_training(config: TrainConfig, rounds: int) -> str:
    """PyTorch's foreach step against lenet's, each in the training steps of its own copy of
    the recipe's prepared model."""
    torch.manual_seed(0)
    model = build_model(config.model_config(num_classes=10, image_size=(28, 28)))
    contenders = {}
    for name in ("foreach", "lenet"):
        copied = prepare_model(copy.deepcopy(model), torch.device("cpu"), config.batch_size)
        ours = build_optimizer(copied.parameters(), config)
        optimizer = ours if name == "lenet" else torch.optim.SGD(copied.parameters(),
                                                                 **ours.defaults)
        for group in optimizer.param_groups:
            group["lr"] = config.lr * 0.01  # gentle: random batches, many rounds
        contenders[name] = (copied, optimizer)
    batches = [(torch.rand(config.batch_size, 1, 28, 28),
                torch.randint(0, 10, (config.batch_size,))) for _ in range(TRAINING_STEPS)]
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in contenders}

    def train(name: str) -> None:
        model, optimizer = contenders[name]
        in_step = 0.0
        start = time.perf_counter()
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            t0 = time.perf_counter()
            optimizer.step()
            in_step += time.perf_counter() - t0
        times[name][0].append((time.perf_counter() - start) / TRAINING_STEPS)
        times[name][1].append(in_step / TRAINING_STEPS)

    for name in contenders:
        train(name)  # warm up
        times[name][0].clear(), times[name][1].clear()
    for r in range(rounds):
        for name in (("foreach", "lenet") if r % 2 == 0 else ("lenet", "foreach")):
            train(name)
    (step_f, opt_f), (step_l, opt_l) = ((statistics.median(t) * 1e6 for t in times[n])
                                        for n in ("foreach", "lenet"))
    return (f"in a training step: foreach {opt_f:6.1f} us of {step_f:,.0f} us, lenet "
            f"{opt_l:6.1f} us of {step_l:,.0f} us ({step_f / step_l:.3f}x the step)")


def main() -> int:
    args = parse(parser(__doc__, rounds=9))
    print(f"CPU: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"lenet's SGD step: {sgd.describe()}")
    for recipe in RECIPES:
        config = TrainConfig(recipe=recipe)
        tensors = len(list(build_model(config.model_config(num_classes=10,
                                                           image_size=(28, 28))).parameters()))
        print(f"{recipe} ({config.optimizer}, momentum {config.momentum}, {tensors} tensors)")
        print("  " + alone(config, args.rounds))
        if config.optimizer == "sgd" and config.momentum:  # (without, lenet uses PyTorch's)
            print("  " + in_training(config, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
