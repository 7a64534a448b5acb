"""`lenet evaluate`, `predict`, `activations` and `export`: using a trained run.

(`lenet ood` is in cli/ood.py.)

Each takes a run directory (or its checkpoint file) and writes its figures and
JSON into the run directory unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..base.device import DEVICE_CHOICES
from ..data.datasets import SPLITS
from ..errors import LenetError
from ..predict.choices import BACKENDS
from .args import int_list, positive_int
from .ood import add_detector_options


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def run_parser(name: str, help: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=help)
        p.add_argument("run", metavar="RUN", help="a run directory or checkpoint file")
        p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
        p.add_argument("--data-dir", metavar="DIR", help="where the run's dataset is")
        p.add_argument("--backend", default="auto", choices=BACKENDS,
                       help="inference engine: auto takes lenet's native kernel where it "
                            "runs (LeNet-5 on the CPU), else ONNX Runtime on the CPU when "
                            "installed, else PyTorch [auto]")
        return p

    p = run_parser("evaluate", "loss, accuracy, per-class metrics and a confusion matrix")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--out", metavar="FILE.png", help="[RUN/confusion-SPLIT.png]")
    p.set_defaults(handler=run_evaluate)

    p = run_parser("predict", "classify your own images (PNG, JPEG, ...)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=positive_int, default=3)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    invert = p.add_mutually_exclusive_group()
    invert.add_argument("--invert", dest="invert", action="store_true", default=None,
                        help="always invert (dark object on a light background)")
    invert.add_argument("--no-invert", dest="invert", action="store_false",
                        help="never invert (light object on a dark background, as the data)")
    add_detector_options(p)
    p.set_defaults(handler=run_predict)

    p = run_parser("activations", "feature maps of layers 1 and 2 for chosen inputs")
    p.add_argument("--classes", metavar="A,B", help="test images of these classes "
                   "[pullover,coat on Fashion-MNIST]")
    p.add_argument("--n", type=positive_int, default=4, help="images per class [4]")
    p.add_argument("--index", type=int_list, metavar="I,J", help="test images by index")
    p.add_argument("--images", nargs="+", metavar="FILE", help="your own image files")
    p.add_argument("--out", metavar="FILE.png", help="[RUN/activations.png]")
    p.set_defaults(handler=run_activations)

    p = run_parser("export", "export to ONNX, Keras or Flax and verify it on the whole test "
                             "split against PyTorch")
    p.add_argument("--onnx", metavar="FILE", help="where to write the ONNX model")
    p.add_argument("--format", choices=("onnx", "keras", "flax"), default="onnx",
                   help="keras: a .keras file (needs the tensorflow extra); flax: parameters "
                        "in .safetensors and lenet_flax.py beside them (the jax extra) [onnx]")
    p.add_argument("--out", metavar="FILE", help="where to write it (for onnx: as --onnx)")
    p.add_argument("--no-verify", dest="verify", action="store_false")
    p.set_defaults(handler=run_export)


def open_run(args: argparse.Namespace) -> Any:
    """The run named by RUN, on --device, its data in --data-dir (lenet.Run)."""
    from ..run.record import Run

    return Run.open(args.run, device=args.device, data_dir=args.data_dir)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..predict.evaluation import format_report, plot_confusion

    run = open_run(args)
    ev = run.evaluate(args.split, backend=args.backend)
    print(format_report(ev))
    metrics = run.dir.write_json(f"evaluation-{args.split}.json", ev.to_dict())
    png = plot_confusion(ev, run.output(args.out, f"confusion-{args.split}.png"))
    print(f"\nconfusion matrix: {png}\nmetrics: {metrics}")
    return 0


def run_predict(args: argparse.Namespace) -> int:

    from ..data.images import ImageError

    run = open_run(args)
    prepared, failures = {}, []
    for name in args.images:
        try:
            prepared[name] = run.load_image(name, invert=args.invert)
        except ImageError as e:
            print(f"lenet: error: {e}", file=sys.stderr)
            failures.append({"file": name, "error": str(e)})
    if not prepared:
        if args.json:
            print(json.dumps(failures, indent=2))
        return 2
    try:
        detector: Any = run.ood_detector(args.detector, args.tpr, backend=args.backend)
    except LenetError as e:
        detector = False
        print(f"lenet: note: no out-of-distribution check ({e})", file=sys.stderr)
    # The prepared images themselves: their originals go to the photo check.
    predictions = run.classify(list(prepared.values()), top_k=args.top_k, ood=detector,
                               backend=args.backend)
    results = []
    for (name, image), p in zip(prepared.items(), predictions, strict=True):
        results.append({
            "file": name, "top": [{"class": c, "probability": q} for c, q in p.top],
            "score": {"detector": p.detector, "value": p.score, "threshold": p.threshold,
                      "tpr": detector.tpr if detector else None},
            "out_of_distribution": p.out_of_distribution,
            "inverted": image.inverted, "notes": image.notes})
    if args.json:
        print(json.dumps(results + failures, indent=2))
    else:
        for r in results:
            top = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
            flag = " [out-of-distribution]" if r["out_of_distribution"] else ""
            notes = "".join(f" ({n})" for n in r["notes"])
            print(f"{r['file']}: {top}{flag}{notes}")
    return 1 if failures else 0


def run_activations(args: argparse.Namespace) -> int:
    import numpy as np

    from ..predict.activations import default_classes, pick_examples, plot_activations

    run = open_run(args)
    classes = run.classes
    images, captions = [], []
    for name in args.images or []:
        images.append(run.load_image(name).pixels)
        captions.append(Path(name).name)
    if args.index or args.classes or not args.images:
        test = run.dataset.test
        wanted = args.classes or (None if args.images or args.index else
                                  default_classes(classes))
        more, more_captions = pick_examples(test.images, test.labels, classes,
                                            index=args.index or (), wanted=wanted,
                                            per_class=args.n)
        images += more
        captions += more_captions
    pixels = np.stack(images)
    acts = run.activations(pixels)
    captions = [f"{c}\npredicted: {classes[int(p.argmax())]} {float(p.max()):.2f}"
                for c, p in zip(captions, acts.probabilities, strict=True)]
    path = plot_activations(pixels, captions, acts.layers, run.output(args.out, "activations.png"),
                            title=f"{run.config.model}: activations after conv1 and conv2")
    print(f"{len(pixels)} inputs: {path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    args.onnx = args.onnx or (args.out if args.format == "onnx" else None)
    if args.format != "onnx" or args.onnx is None:
        from .export_formats import run_framework_export

        return run_framework_export(args, open_run)
    run = open_run(args)
    path = run.export_onnx(args.onnx)
    height, width = run.model.config.input_size
    print(f"wrote {path} ({path.stat().st_size:,} bytes), input 'images' "
          f"(batch, 1, {height}, {width}) float32 in [0, 1], output 'logits' (batch, classes)")
    if args.verify:
        v = run.verify_onnx(path)
        print(f"verified on {v.examples:,} test images: predictions agree on {v.agreement:.2%}, "
              f"max |logit difference| {v.max_abs_error:.2e}, accuracy ONNX "
              f"{v.exported_accuracy:.4f} vs PyTorch {v.torch_accuracy:.4f}")
        if v.agreement < 1.0:
            raise LenetError(f"ONNX Runtime disagrees with PyTorch on {1 - v.agreement:.2%} "
                             "of the test images")
    return 0
