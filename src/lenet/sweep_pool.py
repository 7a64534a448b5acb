"""`lenet sweep`'s default backend: the runs of a sweep in local worker processes.

Each worker is a fresh interpreter (spawn) with `available_cpus() // workers` torch
threads; it runs `execute` from lenet/sweep.py, as a Ray task does (lenet/sweep_ray.py).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .device import available_cpus
from .errors import LenetError
from .sweep import PlannedRun, execute, record_result

MEMORY_PER_WORKER = 1.2e9  # bytes: torch, a dataset copy and a LeNet, with margin


def _worker_init(threads: int) -> None:
    # Ctrl-C reaches every process of the terminal: an idle worker ignores it, a
    # training one saves and stops (its runner installs its own handler).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)


def default_workers(pending: int) -> int:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 8e9
    return max(1, min(pending, available_cpus(), int(memory // MEMORY_PER_WORKER)))


def run_in_pool(pending: list[PlannedRun], workers: int | None, stop_marker: Path,
                say: Callable[[str], None]) -> bool:
    """Run `pending` in `workers` processes (None: default_workers); True when interrupted
    (Ctrl-C)."""
    workers = workers or default_workers(len(pending))
    threads = max(1, available_cpus() // workers)
    say(f"{workers} worker process(es), {threads} thread(s) each")
    interrupted = False
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        stop_marker.touch()  # runs already handed to a worker will not start
        say("stopping: each running run saves after its current step...")

    context = get_context("spawn")  # a clean interpreter per worker: no forked torch state
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(execute, run): run for run in pending}
        signal.signal(signal.SIGINT, on_interrupt)
        try:
            done_count, waiting = 0, set(futures)
            while waiting:
                finished, waiting = wait(waiting, timeout=1.0, return_when=FIRST_COMPLETED)
                if interrupted:
                    for future in waiting:
                        future.cancel()
                for future in finished:
                    if future.cancelled():
                        continue
                    done_count += 1
                    run = futures[future]
                    try:
                        result = future.result()
                    except LenetError as e:
                        result = f"failed: {e}"
                    except Exception as e:  # a crashed worker must not hide the others
                        result = f"failed: {type(e).__name__}: {e}"
                    if result != "done":
                        interrupted = interrupted or result == "interrupted"
                    record_result(run, result)
                    say(f"[{done_count}/{len(pending)}] {run.name}: {result}")
        finally:
            signal.signal(signal.SIGINT, previous)
    stop_marker.unlink(missing_ok=True)
    return interrupted
