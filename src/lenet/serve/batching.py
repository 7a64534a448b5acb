"""Single-image requests that arrive together, classified in one batch.

The event loop gathers the images of single-image requests; it hands them to the
model's worker thread as one micro-batch when no other request is still being
read or decoded (`expect` ... `arrived`), when `max_wait` has passed since the
first (about 2 ms), or when `max_batch` are waiting. Alone, a request goes
straight through (no added latency); under load, batches fill while the previous
one computes, and the worker merges micro-batches queued meanwhile. The worker
only computes: one hand-over per batch each way, so the two threads do not take
the interpreter lock from each other per request. The model runs on this one
thread only, so nothing in it needs to be thread-safe. Batch requests
(`run`) go through the same thread, as they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .limits import ApiError

Classify = Callable[[np.ndarray], Sequence[Any]]  # (N, H, W) uint8 -> N results


@dataclass
class Job:
    images: np.ndarray  # (N, H, W)
    futures: list[asyncio.Future[Any]]  # one per image (micro-batch) or one for all (whole)
    loop: asyncio.AbstractEventLoop
    classify: Classify
    whole: bool  # a batch request: one future gets every result; never merged


STOP: Any = object()  # tells the worker to end


class MicroBatcher:
    def __init__(self, classify: Classify, *, max_batch: int = 256, max_wait: float = 0.002,
                 max_queue: int = 8192, on_batch: Callable[[int], None] | None = None,
                 on_start: Callable[[], None] | None = None) -> None:
        self.classify, self.max_batch, self.max_wait = classify, max_batch, max_wait
        self.max_queue, self.on_batch, self.on_start = max_queue, on_batch, on_start
        self.arriving = 0  # single-image requests reading or decoding their bodies
        self._gathered: list[tuple[np.ndarray, asyncio.Future[Any]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = 0  # images handed over or gathered, not yet answered
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # Jobs, then STOP
        self._thread = threading.Thread(target=self._work, name="lenet-batcher", daemon=True)
        self._thread.start()

    # --- the event loop's side --------------------------------------------------------------

    def expect(self) -> None:
        """A single-image request started reading its body: wait for it before handing over."""
        self.arriving += 1

    def arrived(self) -> None:
        """It has its image (or failed): hand over what is gathered when no one else is on
        the way."""
        self.arriving -= 1
        if self.arriving <= 0 and self._gathered:
            self._hand_over()

    async def submit(self, pixels: np.ndarray, *, expected: bool = False) -> Any:
        """The result for one (H, W) image; raises what `classify` raised. `expected`: its
        request called `expect` (this is its `arrived`)."""
        if expected:
            self.arriving -= 1
        if self._waiting >= self.max_queue:
            raise ApiError(503, "busy", f"{self._waiting:,} images are waiting for the model; "
                                        "retry shortly")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._gathered.append((pixels, future))
        self._waiting += 1
        if len(self._gathered) >= self.max_batch or self.arriving <= 0:
            self._hand_over()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait, self._hand_over)
        try:
            return await future
        finally:
            self._waiting -= 1

    async def run(self, images: np.ndarray, classify: Classify | None = None) -> Sequence[Any]:
        """Results for a whole batch (N, H, W), computed on the worker thread as it came (by
        `classify` when given)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(Job(images, [future], loop, classify or self.classify, whole=True))
        return await future

    def _hand_over(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._gathered:
            return
        gathered, self._gathered = self._gathered, []
        self._queue.put(Job(np.stack([p for p, _ in gathered]), [f for _, f in gathered],
                            gathered[0][1].get_loop(), self.classify, whole=False))

    def close(self) -> None:
        self._queue.put(STOP)
        self._thread.join(timeout=5)

    # --- the worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        if self.on_start is not None:  # per-thread settings: PyTorch's OpenMP threads
            self.on_start()
        held: Job | None = None  # met while merging: the next job
        while True:
            job, held = (held, None) if held is not None else (self._queue.get(), None)
            if job is STOP:
                return
            jobs, count = [job], len(job.images)
            while not job.whole and count < self.max_batch:  # merge what queued meanwhile
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is STOP or more.whole or count + len(more.images) > self.max_batch:
                    held = more
                    break
                jobs.append(more)
                count += len(more.images)
            self._compute(jobs)

    def _compute(self, jobs: list[Job]) -> None:
        images = jobs[0].images if len(jobs) == 1 else np.concatenate([j.images for j in jobs])
        try:
            results: Any = jobs[0].classify(images)
            error = None
            if len(results) != len(images):
                raise RuntimeError(f"the model answered {len(results)} of {len(images)} images")
        except BaseException as e:  # handed to the waiting requests; this thread goes on
            results, error = None, e
        if self.on_batch is not None and error is None:
            self.on_batch(len(images))
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        start = 0
        for job in jobs:
            settled = by_loop.setdefault(job.loop, [])
            if job.whole:
                settled.append((job.futures[0], results, error))
            else:
                for k, future in enumerate(job.futures):
                    settled.append((future, None if error else results[start + k], error))
                start += len(job.futures)
        for loop, settled in by_loop.items():  # one wake-up per event loop for the lot
            with contextlib.suppress(RuntimeError):  # that loop has closed: no one waits
                loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in settled:
        if future.done():  # its request timed out or went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
