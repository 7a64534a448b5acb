"""What else could make PyTorch's path faster for the record models the kernel does not fuse
(`best-62k`, `best-100k`): their training step as `prepare_model` lays it out (fp32, the
layout the guard picked) against bf16 autocast and against torch.compile, in one run.

    python benchmarks/pytorch_paths.py [--batch 128] [--rounds 20] [--threads N]

Per model and contender: examples/s of forward+backward+SGD step, alternating with the fp32
step (order swapped every round, medians), the ratio; torch.compile's time to compile is
printed too. bf16 runs at full speed only where the CPU has bf16 instructions (AVX512-BF16,
AMX); it changes the numbers, so lenet never picks it: it is `--precision bf16`.
"""

from __future__ import annotations

import time

import torch
from alternating import alternate  # (this folder: the scripts run from it)
from layouts import command_line, stepper

MODELS = ("best-62k", "best-100k")


def main() -> int:
    args = command_line(__doc__)
    for recipe in MODELS:
        _, fp32 = stepper(recipe, args.batch, guarded=True)
        for name, options in (("bf16 autocast", {"autocast": torch.bfloat16}),
                              ("torch.compile", {"compiled": True})):
            started = time.perf_counter()
            _, other = stepper(recipe, args.batch, guarded=True, **options)
            ready = time.perf_counter() - started
            t_fp32, t_other = alternate(fp32, other, args.rounds, warmups=2)
            note = f" (compiled in {ready:.1f} s)" if options.get("compiled") else ""
            print(f"{recipe}: fp32 {args.batch / t_fp32:,.0f} ex/s, {name} "
                  f"{args.batch / t_other:,.0f} ex/s: {t_fp32 / t_other:.2f}x{note}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
