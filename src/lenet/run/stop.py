"""Stopping a run cleanly: Ctrl-C (or code) asks, the epoch loop saves and returns."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class StopRequest:
    """First Ctrl-C asks training to stop after the current step (and save);
    a second one interrupts at once. Call `request()` to ask from code."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def request(self) -> None:
        """Ask to stop; asked a second time, interrupt at once (KeyboardInterrupt)."""
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.request()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
