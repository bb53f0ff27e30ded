"""One writer per collection: an advisory lock on a file in its folder."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import CollectionError


class WriterLock:
    """Held from `acquire` until `release`; a second writer gets a clear error."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> "WriterLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CollectionError(
                f"collection {self.path.parent} is locked by a writer (pid {holder}); "
                "close it first, or open read-only"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
