"""One writer per run directory: an advisory lock file that the OS releases when its owner dies.

    with RunLock(run_dir):   # or lock = RunLock(run_dir).acquire() ... lock.release()
        train()

The lock is `fcntl.flock` on RUN/.lock, taken without waiting: a second
`lenet train --name X` (or `lenet resume`) of a run that another process is
writing is refused with a message naming that process. The lock belongs to an
open file, not to the file on disk, so a run killed with `kill -9` leaves a
`.lock` file that locks nothing: the next resume takes it. Under several
processes training one run, only the one that writes files (rank 0) takes it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from ..errors import LenetError

LOCKFILE = ".lock"


class RunLocked(LenetError):
    """Another process is writing this run."""


class RunLock:
    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCKFILE
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> RunLock:
        """Take the lock now or raise RunLocked; a no-op when this object holds it."""
        if self._file is not None:
            return self
        file = open(self.path, "a+")  # noqa: SIM115 (held open for as long as the lock)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            owner = file.read().strip() or "unknown"
            file.close()
            raise RunLocked(f"{self.path.parent} is in use by another lenet process (pid "
                            f"{owner}); wait for it to end, or choose another --name") from None
        except OSError:  # a file system without flock (some network ones): no lock, no refusal
            file.close()
            return self
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
