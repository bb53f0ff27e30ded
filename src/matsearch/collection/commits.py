"""A commit counter readers poll without a system call.

The writer bumps an 8-byte counter in a memory-mapped file after every commit
(add, delete, build, elasticize, compact). A reader compares it with the value
its snapshot was taken at and refreshes from SQLite only when it moved, so an
idle collection costs a search one memory read, not an SQLite statement. A torn
or spurious read only causes a refresh; the state itself always comes from SQLite.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

_WIDTH = 8


class CommitCounter:
    """The counter file of a collection, mapped for reading (and bumping, by the writer)."""

    def __init__(self, path: Path, *, writable: bool):
        self.path = Path(path)
        if writable and (not self.path.exists() or self.path.stat().st_size < _WIDTH):
            with open(self.path, "wb") as f:
                f.write(bytes(_WIDTH))
        fd = os.open(self.path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, _WIDTH, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
        finally:
            os.close(fd)

    @classmethod
    def open(cls, path: Path, *, writable: bool) -> "CommitCounter | None":
        """The counter, or None for a reader of a collection no writer of this version has opened."""
        path = Path(path)
        if not writable and (not path.exists() or path.stat().st_size < _WIDTH):
            return None
        return cls(path, writable=writable)

    def read(self) -> int:
        return struct.unpack_from("<Q", self._map, 0)[0]

    def bump(self) -> None:
        struct.pack_into("<Q", self._map, 0, (self.read() + 1) % (1 << 64))

    def close(self) -> None:
        self._map.close()
