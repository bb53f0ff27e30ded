"""Scattered rows of the store's block files read from disk with direct I/O (`_direct.c`).

A store meant to live on disk re-ranks through this instead of its memory maps: a row costs the
sectors that hold it (one 512-byte sector for a 128-dim float32 row that starts on one), read without
the page cache, all of a re-rank's reads in flight together. Through a map it would cost a 4 KiB page
per block file, and the pages would crowd the page cache. Where the file system refuses direct I/O
(tmpfs, for one) the same reads go through the page cache, with a warning.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

import numpy as np

from . import _direct
from .errors import CollectionError

log = logging.getLogger(__name__)

_SECTORS = (512, 4096)  # the alignments direct I/O may need, tried in turn


class DirectRows:
    """Rows of the block files at `paths` (row-major float32, `widths` values a row), read with direct I/O."""

    def __init__(self, paths: list[Path], widths: list[int]):
        self.paths = [Path(p) for p in paths]
        self._widths = np.array([w * 4 for w in widths], dtype=np.int64)
        self._files = None
        self._opening = threading.Lock()  # searches in threads share the files; the first read settles how
        self.sector = None  # found by the first read
        self.bytes_read = 0  # the sectors read, over this object's life

    def gather(self, rows: np.ndarray, blocks: int) -> list[np.ndarray]:
        """Rows `rows` of the first `blocks` files, one (rows × width) float32 array per file."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        outs = [np.empty((len(rows), w // 4), dtype=np.float32) for w in self._widths[:blocks]]
        if not len(rows):
            return outs
        if self.sector is None:
            with self._opening:
                if self.sector is None:
                    self._settle(rows[:1], [out[:1] for out in outs])
        fds = np.array([f.fileno() for f in self._files[:blocks]], dtype=np.int64)
        try:
            self.bytes_read += _direct.fetch(fds, self._widths[:blocks], rows, outs, self.sector)
        except OSError as exc:
            raise CollectionError(f"reading rows of {self.paths[0].parent}: {exc}") from None
        return outs

    def _settle(self, row: np.ndarray, outs: list[np.ndarray]) -> None:
        """Open the files and find the alignment their reads need (by reading `row`), or fall back to the
        page cache where direct I/O is refused, at open or at the first read."""
        try:
            self._files = self._opened(direct=True)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise CollectionError(f"opening {self.paths[0].parent} for direct reads: {exc}") from None
        else:
            fds = np.array([f.fileno() for f in self._files[: len(outs)]], dtype=np.int64)
            for sector in _SECTORS:
                try:
                    _direct.fetch(fds, self._widths[: len(outs)], row, outs, sector)
                    self.sector = sector
                    return
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise CollectionError(f"reading rows of {self.paths[0].parent}: {exc}") from None
            self._close()
        log.warning("direct I/O is refused on %s; its rows are read through the page cache", self.paths[0].parent)
        self._files, self.sector = self._opened(direct=False), _SECTORS[0]  # any alignment works through the cache

    def _opened(self, *, direct: bool):
        flags = getattr(os, "O_DIRECT", 0) if direct else 0
        return [open(p, "rb", buffering=0, opener=lambda path, mode: os.open(path, mode | flags)) for p in self.paths]

    def _close(self) -> None:
        for f in self._files or ():
            f.close()
        self._files = None
