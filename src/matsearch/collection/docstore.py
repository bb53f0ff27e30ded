"""Ids, text and JSON metadata of a collection's items, in SQLite.

SQLite is also the commit point of an add: vector rows past `rows` (kept in
the meta table) belong to no committed add and are dropped on the next open.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from ..errors import CollectionError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT,
    metadata TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('rows', '0');
"""


class DocStore:
    """Rows of the vector store ↔ user ids, with their text and metadata."""

    def __init__(self, path: Path, *, writable: bool):
        self.path = Path(path)
        if not writable and not self.path.exists():
            raise CollectionError(f"document database {self.path} is missing")
        uri = f"file:{self.path}?mode={'rwc' if writable else 'ro'}"
        try:
            self.db = sqlite3.connect(uri, uri=True)
            if writable:
                self.db.executescript(_SCHEMA)
            self.db.execute("SELECT count(*) FROM docs").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CollectionError(f"document database {self.path} is unreadable: {exc}") from None

    def rows(self) -> int:
        """Vector rows committed so far (live and deleted)."""
        return int(self.db.execute("SELECT value FROM meta WHERE key='rows'").fetchone()[0])

    def live_rows(self) -> np.ndarray:
        return np.fromiter((r for (r,) in self.db.execute("SELECT row FROM docs")), dtype=np.int64)

    def existing(self, ids: list[str]) -> list[str]:
        """Those of `ids` already in the collection."""
        found = []
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            found += [i for (i,) in self.db.execute(f"SELECT id FROM docs WHERE id IN ({marks})", chunk)]
        return found

    def insert(self, first_row: int, ids, texts, metadata) -> None:
        """Commit items at rows first_row, first_row+1, … in one transaction."""
        items = (
            (first_row + n, i, t, None if m is None else json.dumps(m))
            for n, (i, t, m) in enumerate(zip(ids, texts, metadata))
        )
        with self.db:
            self.db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", items)
            self.db.execute("UPDATE meta SET value=? WHERE key='rows'", (str(first_row + len(ids)),))

    def rows_of(self, ids: list[str]) -> dict[str, int]:
        found = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"SELECT id, row FROM docs WHERE id IN ({marks})", chunk))
        return found

    def ids_of(self, rows: np.ndarray) -> dict[int, str]:
        found = {}
        for chunk in _chunks([int(r) for r in np.unique(rows)]):
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"SELECT row, id FROM docs WHERE row IN ({marks})", chunk))
        return found

    def records(self, ids: list[str]) -> dict[str, tuple[int, str | None, dict | None]]:
        """id → (row, text, metadata) for those of `ids` that exist."""
        found = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, row, text, metadata FROM docs WHERE id IN ({marks})"
            for i, row, text, meta in self.db.execute(query, chunk):
                found[i] = (row, text, None if meta is None else json.loads(meta))
        return found

    def delete(self, ids: list[str]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM docs WHERE id=?", ((i,) for i in ids))

    def close(self) -> None:
        self.db.close()


def _chunks(values: list, size: int = 900):
    for start in range(0, len(values), size):
        yield values[start : start + size]
