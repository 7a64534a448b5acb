"""Atomic file writes: a file is either its old self or completely new, never half-written.

Everything lenet writes that a crash, a Ctrl-C or a full disk must not corrupt
(run records, checkpoints, downloads) goes through `atomic_path`: the content is
written to a temporary file beside the target, flushed to the disk (fsync), then
renamed onto it, which is atomic on POSIX. A failure leaves the target untouched
and no temporary file; a full disk (ENOSPC, EDQUOT, EFBIG) or an I/O error (EIO,
EROFS) becomes a `WriteError` that names the target and says it was left as it was.

`keep_previous` keeps the target's old content as a second file (checkpoints
keep the last two), with a hard link: at every moment the target exists,
whole, old or new.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import LenetError

# Failures of the disk rather than of the caller: reported as WriteError.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}
# Test hook (benchmarks/faults.py): seconds to sleep after the content is written and before
# the rename, so that a `kill -9` can be aimed at a write in progress.
SLOW_WRITES = "LENET_TEST_SLOW_WRITES"


class WriteError(LenetError, OSError):
    """A file could not be written because of the disk; the previous file is intact.
    Also an OSError (with errno and filename), so code that tolerates unwritable caches
    keeps doing so."""

    def __str__(self) -> str:
        return str(self.args[0])


@contextmanager
def atomic_path(path: str | Path, *, keep_previous: str | Path | None = None) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; it replaces `path` when the block
    ends without an error, and is removed otherwise. With `keep_previous`, `path`'s old
    content (if any) becomes that file first.

        with atomic_path(run / "checkpoint.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    # Hidden, beside the target (a rename across file systems is not atomic), and unique
    # per process and thread, so concurrent writers of one file never share a temporary.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_native_id()}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        if os.environ.get(SLOW_WRITES):
            time.sleep(float(os.environ[SLOW_WRITES]))
        if keep_previous is not None and path.exists():
            _link_over(path, Path(keep_previous))
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in DISK_ERRORS and not isinstance(e, WriteError):
            error = WriteError(f"{path}: cannot write ({os.strerror(e.errno)}); the previous "
                               f"file, if any, is left as it was")
            error.errno, error.filename = e.errno, str(path)
            raise error from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes, *, keep_previous: str | Path | None = None) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_path(path, keep_previous=keep_previous) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _fsync(path: Path) -> None:
    """The file's data on the disk before the rename makes it the target (a power cut after
    the rename must not leave an empty file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_over(source: Path, target: Path) -> None:
    """`target` becomes another name of `source`'s content, atomically (a copy where the
    file system has no hard links)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_native_id()}.link")
    try:
        try:
            os.link(source, tmp)
        except OSError as e:
            if e.errno in DISK_ERRORS:
                raise
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
