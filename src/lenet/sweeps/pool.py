"""`lenet sweep`'s default backend: the runs of a sweep in local worker processes.

Each worker is a fresh interpreter (spawn) with `available_cpus() // workers` torch
threads; it runs `execute` from trial.py, as a Ray task does (lenet/sweeps/on_ray.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ..base.device import available_cpus
from ..errors import LenetError
from .spec import PlannedRun
from .trial import execute, record_result

MEMORY_PER_WORKER = 1.2e9  # bytes: torch, a dataset copy and a LeNet, with margin


def _worker_init(threads: int) -> None:
    # Ctrl-C reaches every process of the terminal: an idle worker ignores it, a
    # training one saves and stops (its runner installs its own handler).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)


def default_workers(pending: int) -> int:
    try:
        memory: float = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 8e9
    return max(1, min(pending, available_cpus(), int(memory // MEMORY_PER_WORKER)))


def run_in_pool(pending: list[PlannedRun], workers: int | None, stop_marker: Path,
                say: Callable[[str], None], task: Callable[[PlannedRun], str] = execute) -> bool:
    """Run `pending` in `workers` processes (None: default_workers); True when interrupted
    (Ctrl-C). A worker that dies (kill -9, the OOM killer) breaks the whole pool, its
    other runs with it: they go again, those that had started (written their train.log)
    first and each alone. A run is recorded as failed once its worker has died under it
    ATTEMPTS times; one still queued when a pool broke goes again for free."""
    workers = workers or default_workers(len(pending))
    threads = max(1, available_cpus() // workers)
    say(f"{workers} worker process(es), {threads} thread(s) each")
    previous = signal.getsignal(signal.SIGINT)
    state = _PoolState(len(pending), say)

    def on_interrupt(signum: int, frame: Any) -> None:
        state.interrupted = True
        stop_marker.touch()  # runs already handed to a worker will not start
        say("stopping: each running run saves after its current step...")

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        remaining, most = pending, ATTEMPTS * len(pending) + 2  # pools: bounded
        for pools in range(1, most + 1):
            # Runs a pool broke under run next, alone (a pool of one): only the run that
            # kills its worker fails, not the ones that happened to share its pool.
            suspects = [run for run in remaining if state.broken.get(run.name)]
            batch = suspects[:1] or remaining
            again = state.one_pool(batch, 1 if suspects else workers, threads, task)
            remaining = again + [run for run in remaining if run not in batch]
            if not remaining or state.interrupted:
                break
            if pools == most:
                for run in remaining:
                    state.record(run, "failed: not run: worker processes kept dying")
            elif not suspects:
                say(f"a worker process died: {len(remaining)} run(s) go again, those it "
                    "was running one at a time")
    finally:
        signal.signal(signal.SIGINT, previous)
    stop_marker.unlink(missing_ok=True)
    return state.interrupted


ATTEMPTS = 2  # pools that may break under a started run before it is recorded as failed


class _PoolState:
    def __init__(self, total: int, say: Callable[[str], None]) -> None:
        self.total, self.say = total, say
        self.done, self.interrupted = 0, False
        self.broken: dict[str, int] = {}  # run name -> pools that broke under it

    def one_pool(self, runs: list[PlannedRun], workers: int, threads: int,
                 task: Callable[[PlannedRun], str]) -> list[PlannedRun]:
        """Run `runs` in one pool; those to try again (the pool broke under them)."""
        again: list[PlannedRun] = []
        self.started_at = time.time()
        context = get_context("spawn")  # a clean interpreter per worker: no forked torch state
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(task, run): run for run in runs}
            waiting = set(futures)
            while waiting:
                finished, waiting = wait(waiting, timeout=1.0, return_when=FIRST_COMPLETED)
                if self.interrupted:
                    for future in waiting:
                        future.cancel()
                for future in finished:
                    if not future.cancelled():
                        run = futures[future]
                        result = self.outcome(future, run)
                        if result is None:
                            again.append(run)
                        else:
                            self.record(run, result)
        return again

    def outcome(self, future: Any, run: PlannedRun) -> str | None:
        """The run's status, or None: its pool broke, it goes again."""
        try:
            return future.result()
        except BrokenProcessPool:
            log = Path(run.config.out_dir) / run.name / "train.log"  # trial.execute's
            if not log.exists() or log.stat().st_mtime < self.started_at:
                return None  # still queued when the pool broke: not its fault
            self.broken[run.name] = self.broken.get(run.name, 0) + 1
            if self.broken[run.name] < ATTEMPTS:
                return None
            return (f"failed: its worker process died (killed, or out of memory) in each of "
                    f"{ATTEMPTS} attempts")
        except LenetError as e:
            return f"failed: {e}"
        except Exception as e:  # a crashed worker must not hide the others
            return f"failed: {type(e).__name__}: {e}"

    def record(self, run: PlannedRun, result: str) -> None:
        self.done += 1
        self.interrupted = self.interrupted or result == "interrupted"
        record_result(run, result)
        self.say(f"[{self.done}/{self.total}] {run.name}: {result}")
