"""`lenet export RUN --format keras|flax --out FILE`: the model for another framework,
verified on the whole test split against PyTorch (lenet/exports/)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, LenetError

EXTRAS = {"keras": "tensorflow", "flax": "jax"}


def run_framework_export(args: argparse.Namespace,
                         open_run: Callable[[argparse.Namespace], Any]) -> int:
    if args.format == "onnx" or args.out is None:
        raise ConfigError("say where to write: --onnx FILE, or --format keras|flax --out FILE")
    try:
        if args.format == "keras":
            from ..exports import to_keras
        else:
            from ..exports import to_flax
    except ImportError as e:
        raise LenetError(f"--format {args.format} needs {e.name}: pip install "
                         f"'lenet[{EXTRAS[args.format]}]'") from e
    from ..exports.plan import nhwc

    run = open_run(args)
    model = run.model  # on the CPU, in eval mode
    if args.format == "keras":
        paths = [to_keras.export_keras(model, args.out)]
        shape = "logits = keras.models.load_model(FILE)(images)"
    else:
        paths = list(to_flax.export_flax(model, run.classes, args.out))
        shape = "module, variables = lenet_flax.load(FILE); module.apply(variables, images)"
    height, width = model.config.input_size
    for path in paths:
        print(f"wrote {path} ({Path(path).stat().st_size:,} bytes)")
    print(f"input images (batch, {height}, {width}, {model.config.in_channels}) float32 in "
          f"[0, 1], output logits (batch, classes): {shape}")
    if not args.verify:
        return 0
    test = run.dataset.test
    predictor = run.predictor("torch")
    images = nhwc(predictor.as_batch(test.images))
    torch_logits = predictor.logits(test.images).numpy()
    if args.format == "keras":
        v = to_keras.verify_keras(paths[0], images, torch_logits, test.labels)
    else:
        v = to_flax.verify_flax(paths[0], paths[1], images, torch_logits, test.labels)
    name = "Keras" if args.format == "keras" else "Flax"
    print(f"verified on {v.examples:,} test images: predictions agree on {v.agreement:.2%}, "
          f"max |logit difference| {v.max_abs_error:.2e}, accuracy {name} "
          f"{v.exported_accuracy:.4f} vs PyTorch {v.torch_accuracy:.4f}")
    if v.agreement < 1.0:
        raise LenetError(f"{name} disagrees with PyTorch on {1 - v.agreement:.2%} of the test "
                         "images")
    return 0
