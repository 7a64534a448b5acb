"""Atomic file writes: a file is either its old self or completely new, never half-written.

Everything lenet writes that a crash, a Ctrl-C or a full disk must not corrupt
(run records, checkpoints, downloads) goes through `atomic_path`: the content is
written to a temporary file beside the target, then renamed onto it, which is
atomic on POSIX. A failure leaves the target untouched and no temporary file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; it replaces `path` when the block
    ends without an error, and is removed otherwise.

        with atomic_path(run / "checkpoint.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    # Hidden, beside the target (a rename across file systems is not atomic), and unique
    # per process and thread, so concurrent writers of one file never share a temporary.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_native_id()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
