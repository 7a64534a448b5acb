"""`lenet bench`: how fast lenet trains and infers on this machine, with its conditions.

One run prints one table per question:
1. the book's recipe: lenet vs a faithful copy of the book's pipeline, and the ratio;
2. the fastest lenet5 configuration (batch size, precision) and its accuracy;
3. this machine's matmul GFLOP/s and each training figure as a share of the FLOP bound;
4. seconds to first reach 0.90 test accuracy with the fast modern recipe;
5. inference: single-image latency and batch throughput, PyTorch vs ONNX Runtime.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..base.atomic import write_text
from ..base.device import describe, pick_device
from ..base.tables import format_table
from ..data import sources
from ..models.config import MODELS
from ..models.network import build_model
from ..native import lenet5
from ..predict.predictor import Predictor, onnxruntime_available
from ..run.directory import cpu_model
from ..training.config import TrainConfig
from . import measure


def conditions() -> dict[str, Any]:
    info = {"cpu": cpu_model(), "machine": platform.machine(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": describe(pick_device("auto")),
            "lenet5 conv kernel": lenet5.describe()}
    if onnxruntime_available():
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info


def run(*, rounds: int = 2, quick: bool = False, say: Callable[[str], None] = print,
        json_path: str | Path | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {"conditions": conditions()}
    say("conditions: " + ", ".join(f"{k} {v}" for k, v in report["conditions"].items()))
    data = sources.load("fashion-mnist")

    say("\n1. lenet5, the book's recipe (SGD lr 0.1, batch 128, fp32), CPU, one epoch each, "
        "alternating")
    book = measure.book_vs_lenet(data, rounds)
    say(format_table(("round", "book ex/s", "lenet ex/s", "ratio"),
                     [(str(i), f"{b:,.0f}", f"{o:,.0f}", f"{o / b:.2f}x") for i, (b, o)
                      in enumerate(zip(book.book, book.lenet, strict=True), 1)], rule=False))
    say(f"median ratio {book.ratio:.2f}x")
    report["book_recipe"] = {**asdict(book), "ratio": book.ratio}
    book_speed = statistics.median(book.book)

    say("\n2. lenet5 at other batch sizes and precisions (lr scaled with the batch), CPU")
    configs = measure.fastest_config(data)
    say(format_table(("batch", "precision", "ex/s", "vs the book's pipeline"),
                     [(str(c.batch_size), c.precision, f"{speed:,.0f}",
                       f"{speed / book_speed:.2f}x") for c, speed in configs],
                     align="rlrr", rule=False))
    fastest, fastest_speed = configs[0]
    report["configs"] = [{"batch_size": c.batch_size, "precision": c.precision, "lr": c.lr,
                          "examples_per_sec": s} for c, s in configs]
    if not quick:
        accuracy, speed = measure.accuracy_after(fastest.replace(epochs=10))
        say(f"fastest: batch {fastest.batch_size} {fastest.precision} lr {fastest.lr:g}: "
            f"10 epochs at {speed:,.0f} ex/s ({speed / book_speed:.2f}x the book's pipeline), "
            f"test accuracy {accuracy:.4f}")
        report["fastest"] = {"batch_size": fastest.batch_size, "precision": fastest.precision,
                             "examples_per_sec": speed, "test_acc_10_epochs": accuracy}

    say("\n3. this machine's arithmetic: matmul 1024x1024")
    flops = {name: measure.matmul_gflops(dtype) for name, dtype in
             (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    bound = {k: v * 1e9 / measure.TRAIN_FLOP_PER_EXAMPLE for k, v in flops.items()}
    for name in flops:
        say(f"  {name}: {flops[name]:,.0f} GFLOP/s -> FLOP bound for lenet5 training "
            f"({measure.TRAIN_FLOP_PER_EXAMPLE / 1e6:.2f} MFLOP/example): {bound[name]:,.0f} ex/s")
    ours = statistics.median(book.lenet)
    say(f"  book recipe on lenet: {ours:,.0f} ex/s = {ours / bound['fp32']:.1%} of the fp32 bound")
    say(f"  fastest configuration: {fastest_speed:,.0f} ex/s = "
        f"{fastest_speed / bound[fastest.precision]:.1%} of the {fastest.precision} bound")
    report["matmul_gflops"], report["flop_bound_examples_per_sec"] = flops, bound

    if not quick:
        say("\n4. time to 0.90 test accuracy, the fast modern recipe, start-up and data "
            "loading included")
        reached = measure.time_to_accuracy(["--recipe", "fast"])
        seconds = f"{reached.seconds:.1f} s" if reached.seconds else "not reached"
        say(f"  {' '.join(reached.command)}: 0.90 printed after {seconds}; the whole command "
            f"{reached.command_seconds:.1f} s ({reached.epochs} epochs, test accuracy "
            f"{reached.accuracy:.4f})")
        report["time_to_0.90"] = asdict(reached)

    say("\n5. inference, lenet5 on the CPU: one image at a time (1,000 calls) and batches "
        "of 1,024")
    images = data.test.images[:2048]
    model = build_model(MODELS["lenet5"], seed=0)
    report["inference"] = []
    for backend, precision in (("native", "fp32"), ("torch", "fp32"), ("torch", "bf16"),
                               ("onnxruntime", "fp32"), ("hybrid", "fp32")):
        if backend in ("onnxruntime", "hybrid") and not onnxruntime_available():
            say("  onnxruntime: not installed")
            continue
        if backend == "native" and not lenet5.available():
            say("  native: the kernel could not be built here")
            continue
        predictor = Predictor(model, list(data.classes), "cpu", backend=backend,
                              precision=precision)
        answers = measure.inference_speed(predictor, images)
        say(f"  {backend} {precision}: median {answers.median_ms:.3f} ms, p99 "
            f"{answers.p99_ms:.3f} ms per image; {answers.batch_images_per_sec:,.0f} images/s "
            "in batches of 1,024")
        report["inference"].append({**asdict(answers), "precision": precision})

    if torch.cuda.is_available():
        say("\n6. GPU training speed, lenet5")
        gpu = []
        for batch in (512, 2048, 8192):
            for precision in ("fp32", "bf16", "fp16"):
                config = TrainConfig(batch_size=batch, lr=0.1 * batch / 128, device="cuda",
                                     precision=precision)
                speed = measure.steps_per_second(data, config, steps=200)
                gpu.append({"batch_size": batch, "precision": precision,
                            "examples_per_sec": speed})
                say(f"  batch {batch:>5} {precision}: {speed:,.0f} ex/s")
        report["gpu"] = gpu
    if json_path:
        write_text(json_path, json.dumps(report, indent=2, default=str) + "\n")
        say(f"\nwritten: {json_path}")
    return report

