"""`lenet doctor`: what lenet computes with on this machine, and why.

Mostly the native kernel's state: compiler, flags, ISA level (floats per vector), the
cached library and its build log, the guard's timings and decisions, and when the kernel
is not used, why; the small kernels (the OOD detectors' batch scores, DDP's shared-memory
gradient mean); then torch's version, threads and the device `--device auto` picks.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from typing import Any

ISA_NAMES = {16: "AVX-512", 8: "AVX/AVX2", 4: "SSE or NEON", 1: "plain C, no vectors"}
MODES = {"auto": "the guard measures each new setting once, then decides",
         "on": "always the kernel, no guard (LENET_NATIVE=1)",
         "off": "never the kernel (LENET_NATIVE=0)"}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "doctor", help="the native kernel's state: compiler, flags, ISA level, cache, guard",
        description="Print what lenet computes with here: the fused native kernel's compiler, "
                    "flags, ISA level, cache and build log, the guard's timings and decisions "
                    "(and why the kernel is not used, when it is not), torch's version and "
                    "threads, and the device picked. LENET_NATIVE and LENET_NATIVE_MARCH apply.")
    p.add_argument("--measure", action="store_true",
                   help="let the guard decide now for the book's and the modern recipe "
                        "(LeNet-5, batch 128, training; about a second each when not cached)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run_doctor)


def state(measure: bool = False) -> dict[str, Any]:
    """The doctor's findings as JSON-able data."""
    import torch

    from ..base.device import describe, pick_device
    from ..native import build, guard, lenet5

    report: dict[str, Any] = {
        "kernel": lenet5.describe(),
        "environment": {k: os.environ.get(k) for k in (build.MODE_ENV, build.MARCH_ENV,
                                                        "LENET_CACHE_DIR", "CC")},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": describe(pick_device("auto"))}
    if measure and lenet5.available():
        from ..models.config import MODELS
        from ..models.network import build_model
        from ..native.fastpath import native_choice, prepare_model

        cpu = torch.device("cpu")
        report["measured"] = {
            name: {k: v for k, v in native_choice(
                prepare_model(build_model(MODELS[name], seed=0), cpu), 128).items()
                if k != "kernel"}
            for name in ("lenet5", "lenet5-modern")}
    from ..native import knn, pixels, sgd, shm_reduce

    report["small_kernels"] = {"OOD k-NN": knn.describe(),
                               "OOD pixels": pixels.describe(),
                               "DDP mean": shm_reduce.describe(),
                               "SGD step": sgd.describe()}
    report["native"] = guard.kernel_report()  # last: it holds the decisions just made
    return report


def format_state(report: dict[str, Any]) -> str:
    native = report["native"]
    lines = [f"kernel:      {report['kernel']}",
             f"mode:        {native['mode']}: {MODES[native['mode']]}"]
    if native.get("why_not"):
        lines.append(f"why not:     {native['why_not']}")
    info = native.get("build")
    if info:
        width = info["vector_width"]
        lines += [f"compiler:    {info['compiler']} ({info['compiler_version']})",
                  f"flags:       {shlex.join(info['flags']) if info['flags'] else '(none built)'}",
                  f"ISA level:   -march={info['march'] or '(compiler default)'}: {width} floats "
                  f"a vector ({ISA_NAMES.get(width, '?')})",
                  f"cache:       {info['cache_dir']}",
                  f"library:     {info['library'] or '(none)'}",
                  f"build log:   {info['log'] or '(none)'}"]
        lines += [f"failed:      {path}" for path in info["failed_logs"]]
    lines.append(f"guard file:  {native.get('guard_file') or '(none)'}")
    decisions = {**native.get("other_cached_decisions", {}), **native.get("decisions", {})}
    if decisions:
        lines.append("decisions:")
        for key, d in sorted(decisions.items()):
            path = "fused kernel" if d["use_kernel"] else "PyTorch"
            lines.append(f"  {key}: {path} ({d['why']})")
    elif native["mode"] == "auto":
        lines.append("decisions:   none yet (the first training step of a setting measures; "
                     "or run lenet doctor --measure)")
    for name, choice in report.get("measured", {}).items():
        lines.append(f"{name}, batch 128, training: {choice['path']}: {choice['why']}")
    lines += [f"{name + ':':12s} {what}" for name, what in report["small_kernels"].items()]
    set_vars = {k: v for k, v in report["environment"].items() if v is not None}
    lines += [f"torch:       {report['torch']}, {report['threads']} threads",
              f"device:      {report['device']} (--device auto)",
              "environment: " + (", ".join(f"{k}={v}" for k, v in set_vars.items())
                                 or "(no LENET_NATIVE, LENET_NATIVE_MARCH, LENET_CACHE_DIR, "
                                    "CC set)")]
    return "\n".join(lines)


def run_doctor(args: argparse.Namespace) -> int:
    report = state(measure=args.measure)
    print(json.dumps(report, indent=2) if args.json else format_state(report))
    return 0
