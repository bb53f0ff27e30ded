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
        self.sector = None  # found by the first read
        self.bytes_read = 0  # the sectors read, over this object's life

    def gather(self, rows: np.ndarray, blocks: int) -> list[np.ndarray]:
        """Rows `rows` of the first `blocks` files, one (rows × width) float32 array per file."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        outs = [np.empty((len(rows), w // 4), dtype=np.float32) for w in self._widths[:blocks]]
        if not len(rows):
            return outs
        files = self._open()
        fds = np.array([f.fileno() for f in files[:blocks]], dtype=np.int64)
        for sector in _SECTORS if self.sector is None else (self.sector,):
            try:
                self.bytes_read += _direct.fetch(fds, self._widths[:blocks], rows, outs, sector)
                self.sector = sector
                return outs
            except OSError as exc:
                if exc.errno != errno.EINVAL or self.sector is not None:
                    raise CollectionError(f"reading rows of {self.paths[0].parent}: {exc}") from None
        log.warning("direct I/O is refused on %s; its rows are read through the page cache", self.paths[0].parent)
        self._close()
        self._files = self._opened(direct=False)
        self.sector = _SECTORS[0]  # any alignment works through the page cache
        return self.gather(rows, blocks)

    def _open(self):
        if self._files is None:
            try:
                self._files = self._opened(direct=True)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise CollectionError(f"opening {self.paths[0].parent} for direct reads: {exc}") from None
                log.warning("direct I/O is refused on %s; its rows are read through the page cache",
                            self.paths[0].parent)
                self._files, self.sector = self._opened(direct=False), _SECTORS[0]
        return self._files

    def _opened(self, *, direct: bool):
        flags = getattr(os, "O_DIRECT", 0) if direct else 0
        return [open(p, "rb", buffering=0, opener=lambda path, mode: os.open(path, mode | flags)) for p in self.paths]

    def _close(self) -> None:
        for f in self._files or ():
            f.close()
        self._files = None

    def close(self) -> None:
        self._close()
