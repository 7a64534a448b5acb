"""The out-of-distribution check's cost for one batch, compiled parts on vs off, in one run.

`lenet serve` checks every image of a batch request (the default "combined" detector:
Mahalanobis, k-NN and pixel statistics on the model's penultimate features). Two of its
parts have compiled kernels (lenet/native/knn.c, pixels.c); this times each part and a
whole served batch (`Service._classify`: model, check, answers) with the kernels and with
their numpy/PyTorch fallbacks, alternating, and prints the ratios.

    python benchmarks/ood_batch.py RUN                 # RUN: a trained run directory
    python benchmarks/ood_batch.py RUN --threads 2 --batch 256 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator


def per_call_ms(fn: Callable[[], object], calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


@contextlib.contextmanager
def fallbacks(off: bool) -> Iterator[None]:
    """The OOD kernels replaced by "unavailable" (their callers take numpy/PyTorch)."""
    from lenet.native import knn, pixels

    saved = knn.kth_similarity, pixels.pixel_sums
    if off:
        knn.kth_similarity, pixels.pixel_sums = (lambda *_: None), (lambda *_: None)
    try:
        yield
    finally:
        knn.kth_similarity, pixels.pixel_sums = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a trained run directory (its test images are the batch)")
    parser.add_argument("--batch", type=int, default=256, help="images a batch [256]")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch/OpenMP threads [1]")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds [5]")
    parser.add_argument("--calls", type=int, default=100, help="calls a timing [100]")
    args = parser.parse_args()

    from lenet.ood.detectors import pixel_statistics
    from lenet.run.directory import cpu_model
    from lenet.serve.limits import Limits
    from lenet.serve.metrics import Metrics
    from lenet.serve.service import Options, Service

    # As `lenet serve` runs: its own process (numpy's BLAS held to one thread, PyTorch's
    # and OpenMP's to --threads).
    service = Service(Options(args.run, threads=args.threads, batch_threads=args.threads,
                              own_process=True), Limits(), Metrics())
    service.load()
    if service.failure or not service.detector:
        raise SystemExit(f"{args.run}: no model or no OOD check ({service.failure})")
    images = service.run.dataset.test.images[:args.batch].copy()
    check = service.detector.check
    inputs = check.inputs(images)
    knn_part = check.guard.detectors["knn"]
    parts = {
        "k-NN score": lambda: knn_part.score(inputs),
        "pixel statistics": lambda: pixel_statistics(inputs.pixels),
        f"served batch of {args.batch} (model, check, answers)": lambda: service._classify(
            images, top_k=5),
    }
    times: dict[str, dict[bool, list[float]]] = {name: {False: [], True: []} for name in parts}
    for r in range(args.rounds):
        for off in ((False, True) if r % 2 == 0 else (True, False)):
            with fallbacks(off):
                for name, fn in parts.items():
                    times[name][off].append(per_call_ms(fn, args.calls))
    print(f"CPU: {cpu_model()}; {args.threads} thread(s); batch of {args.batch}; bank "
          f"{knn_part.bank.shape[0]:,} x {knn_part.bank.shape[1]}, k = {knn_part.k}; median "
          f"of {args.rounds} alternating rounds of {args.calls} calls")
    print(f"{'':52s} {'compiled':>9s} {'fallback':>9s}  ratio")
    for name, t in times.items():
        on, off = statistics.median(t[False]), statistics.median(t[True])
        print(f"{name:52s} {on:7.2f} ms {off:6.2f} ms  {off / on:4.2f}x")
    on = statistics.median(times[list(parts)[-1]][False])
    print(f"served batch, compiled: {args.batch / on * 1e3:,.0f} images/s in-process")
    service.close()


if __name__ == "__main__":
    main()
