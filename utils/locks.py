"""One writer at a time: an advisory lock on a file beside what is written."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from utils.errors import PipelineError


@contextmanager
def exclusive_lock(path: Path, what: str, wait_s: float = 0) -> Iterator[Path]:
    """Hold an exclusive advisory lock (flock) on the lock file `path` (e.g. `<folder>/.lock`, created if
    needed) for the `with` block, or raise PipelineError when another process holds it, at once or after
    `wait_s` seconds of trying: "`what` is being written by another process (pid N); …". Two writers of one
    folder would otherwise delete or overwrite each other's temporary files and leave a mix of both runs'
    outputs.

    The lock file holds the holder's pid (for that message) and is removed when the block ends, Ctrl-C included.
    The kernel releases the lock when the holder dies (kill -9 included), so a lock file a killed run leaves
    behind never blocks anyone. A lock taken on a file that was removed meanwhile is retried on the new one, so
    removing it is safe. Processes forked inside the block (a worker pool) share the lock. Readers do not lock."""
    import fcntl

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PipelineError(f"cannot create the folder of the lock file {path} ({e.strerror or e})") from None
    give_up = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise PipelineError(f"cannot create the lock file {path} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if time.monotonic() < give_up:
                time.sleep(0.1)
                continue
            who = f"pid {holder}" if holder.isdigit() else "pid unknown"
            raise PipelineError(f"{what} is being written by another process ({who}); wait for it to finish "
                                f"or stop it, then run again (lock file {path})") from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder removed this file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)  # while still holding the lock (see the retry above)
        finally:
            os.close(fd)
