"""Single-image requests that arrive together, classified in one batch.

Handlers submit one (H, W) uint8 image each and await the result. One worker
thread takes whatever is queued (up to `max_batch`) and runs it through the
model in one call, the batch path's throughput. It waits for more only while
other requests are already on their way in (`arriving`: bodies being read or
decoded), and never longer than `max_wait`: alone, a request goes straight
through (no added latency); under load, the batch fills while the previous one
computes. The model runs on this one thread only, so nothing in it needs to be
thread-safe.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .limits import ApiError

STOP = (None,)  # tells the worker to end
Classify = Callable[[np.ndarray], Sequence[Any]]  # (N, H, W) uint8 -> N results


class MicroBatcher:
    def __init__(self, classify: Classify, *, max_batch: int = 256, max_wait: float = 0.002,
                 max_queue: int = 8192, on_batch: Callable[[int], None] | None = None,
                 on_start: Callable[[], None] | None = None) -> None:
        self.classify, self.max_batch, self.max_wait = classify, max_batch, max_wait
        self.max_queue, self.on_batch, self.on_start = max_queue, on_batch, on_start
        self.arriving = 0  # requests reading or decoding their bodies (event loop only)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._thread = threading.Thread(target=self._work, name="lenet-batcher", daemon=True)
        self._thread.start()

    async def submit(self, pixels: np.ndarray) -> Any:
        """The result for one image; raises what `classify` raised."""
        if self._pending >= self.max_queue:
            raise ApiError(503, "busy", f"{self._pending:,} images are waiting for the model; "
                                        "retry shortly")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending += 1
        self._queue.put((pixels, future, loop, None))
        try:
            return await future
        finally:
            self._pending -= 1

    async def run(self, images: np.ndarray, classify: Classify | None = None) -> Sequence[Any]:
        """Results for a whole batch (N, H, W), computed on the worker thread as it came (by
        `classify` when given), queued like one item."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((images, future, loop, classify or self.classify))
        return await future

    def close(self) -> None:
        self._queue.put(STOP)
        self._thread.join(timeout=5)

    # --- the worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        if self.on_start is not None:  # per-thread settings: PyTorch's OpenMP threads
            self.on_start()
        held = None  # a batch or the stop signal met while filling a micro-batch: next
        while True:
            item, held = (held, None) if held is not None else (self._queue.get(), None)
            if item is STOP:
                return
            if item[3] is not None:  # a whole batch: as it came
                self._compute([item], item[0], item[3], batch=True)
                continue
            items = [item]
            deadline = time.perf_counter() + self.max_wait
            while len(items) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    left = deadline - time.perf_counter()
                    if self.arriving <= 0 or left <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                if nxt is STOP or nxt[3] is not None:
                    held = nxt
                    break
                items.append(nxt)
            self._compute(items, np.stack([i[0] for i in items]), self.classify, batch=False)

    def _compute(self, items: list[Any], images: np.ndarray, classify: Classify,
                 batch: bool) -> None:
        try:
            results: Any = classify(images)
            error = None
        except BaseException as e:  # handed to the waiting request(s)
            results, error = None, e
        if self.on_batch is not None and error is None:
            self.on_batch(len(images))
        by_loop: dict[Any, list[tuple[Any, Any, BaseException | None]]] = {}
        for k, (_, future, loop, _) in enumerate(items):
            value = results if batch else (results[k] if results is not None else None)
            by_loop.setdefault(loop, []).append((future, value, error))
        for loop, settled in by_loop.items():  # one wake-up per event loop, not per item
            loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, value, error in settled:
        if future.done():  # its request timed out or went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
