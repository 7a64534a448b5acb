"""`lenet evaluate`, `predict`, `activations`, `ood` and `export`: using a trained run.

Each takes a run directory (or its checkpoint file) and writes its figures and
JSON into the run directory unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..device import DEVICE_CHOICES
from ..errors import LenetError
from ..inference import BACKENDS
from .args import fraction, int_list, positive_int


def register(commands: argparse._SubParsersAction) -> None:
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
    p.add_argument("--split", default="test", choices=("test", "train"))
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
    add_ood_options(p)
    p.set_defaults(handler=run_predict)

    p = run_parser("activations", "feature maps of layers 1 and 2 for chosen inputs")
    p.add_argument("--classes", metavar="A,B", help="test images of these classes "
                   "[pullover,coat on Fashion-MNIST]")
    p.add_argument("--n", type=positive_int, default=4, help="images per class [4]")
    p.add_argument("--index", type=int_list, metavar="I,J", help="test images by index")
    p.add_argument("--images", nargs="+", metavar="FILE", help="your own image files")
    p.add_argument("--out", metavar="FILE.png", help="[RUN/activations.png]")
    p.set_defaults(handler=run_activations)

    p = run_parser("ood", "confidence and activations on test images, noise, blanks, photos")
    p.add_argument("--n", type=positive_int, default=500, help="images per random group [500]")
    p.add_argument("--no-photos", dest="photos", action="store_false",
                   help="skip scikit-image's photos")
    p.add_argument("--out", metavar="FILE.png", help="[RUN/ood.png]")
    add_ood_options(p)
    p.set_defaults(handler=run_ood)

    p = run_parser("export", "export to ONNX and verify it on the whole test split")
    p.add_argument("--onnx", required=True, metavar="FILE", help="where to write the model")
    p.add_argument("--no-verify", dest="verify", action="store_false")
    p.set_defaults(handler=run_export)


def add_ood_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--score", default="msp", choices=("msp", "energy"),
                   help="out-of-distribution score: max softmax probability or energy [msp]")
    p.add_argument("--tpr", type=fraction, default=0.95,
                   help="fraction of test images the threshold lets through [0.95]")


class OpenRun:
    """A run's predictor, with its dataset loaded on first use."""

    def __init__(self, args: argparse.Namespace, backend: str | None = None) -> None:
        from .. import checkpoint
        from ..inference import Predictor

        self.path = checkpoint.resolve(args.run)
        self.dir = self.path.parent
        self.predictor = Predictor.from_run(self.path, args.device, backend or args.backend)
        self.payload = checkpoint.load(self.path)
        self.data_dir = args.data_dir
        self._dataset: Any = None

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            from .. import sources

            self._dataset = sources.load(self.payload["dataset"], self.data_dir)
        return self._dataset

    def output(self, given: str | None, default: str) -> Path:
        return Path(given) if given else self.dir / default

    def threshold(self, kind: str, tpr: float) -> float:
        from ..ood import cached_threshold

        return cached_threshold(self.dir, self.predictor, lambda: self.dataset.test.images,
                                kind, tpr)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_split, format_report, plot_confusion

    run = OpenRun(args)
    split = getattr(run.dataset, args.split)
    ev = evaluate_split(run.predictor, split.images, split.labels, args.split)
    print(format_report(ev))
    (run.dir / f"evaluation-{args.split}.json").write_text(json.dumps(ev.to_dict(), indent=2))
    png = plot_confusion(ev, run.output(args.out, f"confusion-{args.split}.png"))
    print(f"\nconfusion matrix: {png}\nmetrics: {run.dir / f'evaluation-{args.split}.json'}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from ..datasets import DATASETS
    from ..images import ImageError, prepare
    from ..ood import score

    run = OpenRun(args)
    spec = DATASETS.get(run.payload["dataset"])
    fill = spec.object_fill if spec else 1.0
    prepared, failures = {}, []
    for name in args.images:
        try:
            prepared[name] = prepare(name, size=run.predictor.input_size, invert=args.invert,
                                     fill=fill)
        except ImageError as e:
            print(f"lenet: error: {e}", file=sys.stderr)
            failures.append({"file": name, "error": str(e)})
    if not prepared:
        if args.json:
            print(json.dumps(failures, indent=2))
        return 2
    try:
        threshold: float | None = run.threshold(args.score, args.tpr)
    except LenetError as e:
        threshold = None
        print(f"lenet: note: no out-of-distribution check ({e})", file=sys.stderr)
    pixels = np.stack([p.pixels for p in prepared.values()])
    logits = run.predictor.logits(pixels)  # once, for the classes and the OOD score
    predictions = run.predictor.predictions(logits, top_k=args.top_k)
    scores = score(logits, args.score)
    results = []
    for (name, image), prediction, s in zip(prepared.items(), predictions, scores, strict=True):
        results.append({
            "file": name, "top": [{"class": c, "probability": p} for c, p in prediction.top],
            "score": {"kind": args.score, "value": float(s), "threshold": threshold},
            "out_of_distribution": None if threshold is None else bool(s < threshold),
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
    import torch

    from ..activations import capture, plot_activations
    from ..images import prepare

    run = OpenRun(args)
    classes = run.predictor.classes
    images, captions = [], []
    if args.images:
        for name in args.images:
            pixels = prepare(name, size=run.predictor.input_size, invert=None).pixels
            images.append(pixels)
            captions.append(Path(name).name)
    test = run.dataset.test if (args.index or not args.images or args.classes) else None
    for i in args.index or []:
        if i >= len(test):
            raise LenetError(f"--index {i}: the test split has {len(test)} images")
        images.append(test.images[i])
        captions.append(f"{classes[test.labels[i]]} (test #{i})")
    if args.classes or not (args.images or args.index):
        wanted = args.classes or default_classes(classes)
        for label in (match_class(c, classes) for c in wanted.split(",")):
            for i in np.flatnonzero(test.labels == label)[:args.n]:
                images.append(test.images[i])
                captions.append(f"{classes[label]} (test #{i})")
    pixels = np.stack(images)
    with torch.inference_mode():
        logits, acts = capture(run.predictor.model, run.predictor.as_batch(pixels))
    probs = torch.softmax(logits.float().cpu(), 1)
    captions = [f"{c}\npredicted: {classes[int(p.argmax())]} {float(p.max()):.2f}"
                for c, p in zip(captions, probs, strict=True)]
    path = plot_activations(pixels, captions, acts, run.output(args.out, "activations.png"),
                            title=f"{run.payload['model_name']}: activations after conv1 "
                                  "and conv2")
    print(f"{len(pixels)} inputs: {path}")
    return 0


def default_classes(classes: list[str]) -> str:
    if "pullover" in classes and "coat" in classes:
        return "pullover,coat"  # the chapter's exercise: sweaters vs coats
    return ",".join(classes[:2])


def match_class(name: str, classes: list[str]) -> int:
    name = name.strip().lower()
    for i, c in enumerate(classes):
        if name in (c.lower(), c.lower().split("/")[0]):
            return i
    raise LenetError(f"unknown class {name!r}; classes: {', '.join(classes)}")


def run_ood(args: argparse.Namespace) -> int:
    from ..ood import analyse, format_reports, plot_reports, probe_groups

    run = OpenRun(args)
    threshold = run.threshold(args.score, args.tpr)
    groups = probe_groups(run.dataset.test.images, n=args.n, with_photos=args.photos)
    reports = analyse(run.predictor, groups, threshold, args.score)
    classes = run.predictor.classes
    print(format_reports(reports, classes, threshold, args.score, args.tpr))
    msp_threshold = threshold if args.score == "msp" else None
    png = plot_reports(reports, groups, classes, run.output(args.out, "ood.png"), msp_threshold,
                       f"{run.payload['model_name']} on inputs unlike its training data")
    (run.dir / "ood.json").write_text(json.dumps(
        {"score": args.score, "tpr": args.tpr, "threshold": threshold,
         "groups": [{**r.__dict__, "predicted": r.predicted.tolist()} for r in reports]},
        indent=2))
    print(f"\nfigure: {png}\ntable: {run.dir / 'ood.json'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx, verify

    run = OpenRun(args, backend="torch")  # verified against PyTorch itself
    path = export_onnx(run.predictor, args.onnx)
    print(f"wrote {path} ({path.stat().st_size:,} bytes), input 'images' "
          f"(batch, 1, {run.predictor.input_size[0]}, {run.predictor.input_size[1]}) float32 "
          "in [0, 1], output 'logits' (batch, classes)")
    if args.verify:
        test = run.dataset.test
        v = verify(path, run.predictor, test.images, test.labels)
        print(f"verified on {v.examples:,} test images: predictions agree on {v.agreement:.2%}, "
              f"max |logit difference| {v.max_abs_error:.2e}, accuracy ONNX {v.onnx_accuracy:.4f} "
              f"vs PyTorch {v.torch_accuracy:.4f}")
        if v.agreement < 1.0:
            raise LenetError(f"ONNX Runtime disagrees with PyTorch on {1 - v.agreement:.2%} "
                             "of the test images")
    return 0
