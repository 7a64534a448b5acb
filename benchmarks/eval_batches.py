"""Evaluation batch sizes: 10,000 images through the record models in the training loop's
evaluation batches of 1,024 (before) against the size `evaluation_batch` picks for the
model's path (now: 1,024 with the fused kernel, 256 on PyTorch's path on a CPU), and
`Predictor.logits` in chunks of 4,096 (before) against its own choice (the same rule).

    python benchmarks/eval_batches.py [--rounds 3] [--threads N]

Per model: the median seconds of each, alternating them (the order swapped every round), and
the ratio. Run it on an idle machine; the CPU model and the threads are printed with them.
"""

from __future__ import annotations

from functools import partial

import torch
from alternating import alternate, parse, parser  # (this folder: the scripts run from it)

from lenet.data.loader import Batches
from lenet.models.network import build_model
from lenet.native.fastpath import evaluation_batch, prepare_model
from lenet.predict.predictor import Predictor
from lenet.run.directory import cpu_model
from lenet.training.config import RECIPES, TrainConfig
from lenet.training.loop import evaluate

MODELS = ("best-100k", "best-62k", "speed-92", "classic-best")  # recipes whose models are timed


def main() -> int:
    args = parse(parser(__doc__, rounds=3))
    print(f"CPU: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          "10,000 images")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((10_000, 1, 28, 28), generator=generator)
    y = torch.randint(0, 10, (10_000,), generator=generator)
    pixels = (x[:, 0] * 255).to(torch.uint8).numpy()
    for recipe in (r for r in MODELS if r in RECIPES):
        config = TrainConfig.from_recipe(recipe)
        model = build_model(config.model_config(num_classes=10, image_size=(28, 28)), seed=0)
        trained = prepare_model(model, torch.device("cpu"), config.batch_size)  # as training
        now = evaluation_batch(trained, torch.device("cpu"))
        before, after = alternate(
            partial(evaluate, trained, Batches(x, y, batch_size=1024, shuffle=False)),
            partial(evaluate, trained, Batches(x, y, batch_size=now, shuffle=False)),
            args.rounds)
        print(f"{recipe}: training's evaluation, batches of 1,024 {before:.3f} s, of {now:,} "
              f"{after:.3f} s: {before / after:.2f}x", flush=True)
        predictor = Predictor(model, [str(k) for k in range(10)], backend="torch")
        before, after = alternate(partial(predictor.logits, pixels, batch_size=4096),
                                  partial(predictor.logits, pixels), args.rounds)
        print(f"{recipe}: Predictor.logits, chunks of 4,096 {before:.3f} s, of "
              f"{predictor.batch_size:,} {after:.3f} s: {before / after:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
