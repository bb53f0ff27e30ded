"""Row → id, memory-mapped: what a search needs from the document database, without SQLite.

Rows are append-only and a row's id never changes, so the table is two files
that grow with every add and are written (and fsynced) before SQLite commits it:
`ids.utf8`, the ids' UTF-8 bytes back to back, and `ids.ends`, each row's end
offset in it (uint64). Like the vector store, rows past the committed count are
the tail of an add that never committed and are dropped on the next writable
open. The table is derived data: when it is missing or short it is rebuilt
from SQLite (deleted rows, whose ids SQLite no longer holds, get empty ids;
no search returns them).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from .. import _kernels
from ..errors import CollectionError

_BYTES, _ENDS, _CRC = "ids.utf8", "ids.ends", "ids.crc"  # ids.crc: per append (first row, rows, CRC-32 of
#                                                           its ends, of its bytes), checked as rows are mapped


class IdTable:
    """`count` rows' ids, mapped; `lookup` maps row numbers to id strings."""

    def __init__(self, folder: Path, count: int, *, verified: int = 0):
        self.folder = Path(folder)
        self.count = count
        self._verified = verified
        self._map(count)

    @staticmethod
    def exists(folder: Path, count: int) -> bool:
        ends = Path(folder) / _ENDS
        return ends.exists() and (Path(folder) / _BYTES).exists() and ends.stat().st_size >= 8 * count

    @classmethod
    def write(cls, folder: Path, ids_by_row: list[str]) -> "IdTable":
        """Write a whole table (a rebuild from SQLite, or a compacted collection's)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in (_BYTES, _ENDS, _CRC):
            (folder / name).write_bytes(b"")
        table = cls(folder, 0)
        table.append(0, ids_by_row)
        return table

    def _map(self, count: int) -> None:
        self.count = count
        if count == 0:
            self._ends, self._bytes = np.zeros(0, dtype=np.uint64), b""
            return
        self._ends = np.asarray(np.memmap(self.folder / _ENDS, dtype=np.uint64, mode="r", shape=(count,)))
        size = int(self._ends[-1])
        if (self.folder / _BYTES).stat().st_size < size:
            raise CollectionError(f"id table {self.folder / _BYTES} is shorter than {self.folder / _ENDS} says")
        self._bytes = np.asarray(np.memmap(self.folder / _BYTES, dtype=np.uint8, mode="r", shape=(size,))) if size \
            else np.zeros(0, dtype=np.uint8)
        self._verify(count)

    def _records(self) -> np.ndarray:
        path = self.folder / _CRC
        data = np.fromfile(path, dtype=np.uint64) if path.exists() else np.zeros(0, dtype=np.uint64)
        return data[: len(data) // 4 * 4].reshape(-1, 4)

    def _verify(self, count: int) -> None:
        """Check the appends mapped since the last check against their checksums."""
        for first, n, ends_crc, bytes_crc in self._records().tolist():
            if first < self._verified or first + n > count:
                continue
            lo = int(self._ends[first - 1]) if first else 0
            if zlib.crc32(self._ends[first : first + n].tobytes()) != ends_crc or \
                    zlib.crc32(self._bytes[lo : int(self._ends[first + n - 1])].tobytes()) != bytes_crc:
                raise CollectionError(f"id table {self.folder} is corrupt: rows {first}-{first + n - 1} fail "
                                      "their checksum")
        self._verified = count

    def append(self, first_row: int, ids: list[str], *, visible: bool = True) -> None:
        """Write ids for rows first_row… (dropping any uncommitted tail first), flush, and map them (with
        `visible=False`, leave that to `grow`)."""
        encoded = [i.encode() for i in ids]
        start = int(self._ends[first_row - 1]) if first_row else 0
        ends = start + np.cumsum([len(e) for e in encoded], dtype=np.uint64)
        data = b"".join(encoded)
        _write_at(self.folder / _BYTES, start, data)
        _write_at(self.folder / _ENDS, 8 * first_row, ends.tobytes())
        record = np.array([first_row, len(ids), zlib.crc32(ends.tobytes()), zlib.crc32(data)], dtype=np.uint64)
        _write_at(self.folder / _CRC, 32 * int(np.count_nonzero(self._records()[:, 0] < first_row)), record.tobytes())
        if visible:
            self._map(first_row + len(ids))

    def grow(self, count: int) -> None:
        """Map the first `count` rows (appended with `visible=False`)."""
        self._map(count)

    def truncate(self, count: int) -> None:
        """Drop rows past `count` (an add that never committed)."""
        ends = self.folder / _ENDS
        if ends.stat().st_size > 8 * count:
            size = int(np.fromfile(ends, dtype=np.uint64, count=count)[-1]) if count else 0
            kept = 32 * int(np.count_nonzero(self._records()[:, 0] < count))
            for path, length in ((ends, 8 * count), (self.folder / _BYTES, size), (self.folder / _CRC, kept)):
                with open(path, "r+b") as f:
                    f.truncate(length)
                    os.fsync(f.fileno())
        self._map(min(count, self.count))

    def remap(self, count: int) -> "IdTable":
        """A view of the first `count` rows (after another process committed more)."""
        return IdTable(self.folder, count, verified=self._verified)

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        """Ids of `rows` (any shape), as an object array of the same shape."""
        rows = np.asarray(rows)
        out = np.empty(rows.size, dtype=object)
        try:
            out[:] = _kernels.ids(self._ends, self._bytes, np.ascontiguousarray(rows, dtype=np.int64))
        except IndexError as exc:
            raise CollectionError(f"id table {self.folder / _ENDS}: {exc}") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise CollectionError(f"id table {self.folder / _BYTES} is corrupt: {exc}") from None
        return out.reshape(rows.shape)


def _write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b" if path.exists() else "w+b") as f:
        f.seek(offset)
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
