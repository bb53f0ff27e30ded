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
_CHUNK = 900  # stays under SQLite's limit on bound parameters


class DocStore:
    """Rows of the vector store ↔ user ids, with their text and metadata."""

    def __init__(self, path: Path, *, writable: bool, create: bool = False):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise CollectionError(f"document database {self.path} is missing")
        mode = "rwc" if create else "rw" if writable else "ro"
        try:
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode={mode}", uri=True)
            if create:
                self.db.executescript(_SCHEMA)
            self.rows()
        except sqlite3.DatabaseError as exc:
            raise CollectionError(f"document database {self.path} is unreadable: {exc}") from None

    def rows(self) -> int:
        """Vector rows committed so far (live and deleted)."""
        return int(self.db.execute("SELECT value FROM meta WHERE key='rows'").fetchone()[0])

    def version(self) -> int:
        """Changes when another connection commits (SQLite's data_version)."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def bump(self) -> None:
        """Commit a change readers must notice that touches no document (an index build)."""
        with self.db:
            self.db.execute("INSERT INTO meta VALUES ('builds', '1') "
                            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")

    def live_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM docs").fetchone()[0])

    def live_rows(self) -> np.ndarray:
        return np.fromiter((r for (r,) in self.db.execute("SELECT row FROM docs")), dtype=np.int64)

    def existing(self, ids: list[str]) -> list[str]:
        """Those of `ids` already in the collection."""
        return [i for (i,) in self._select_in("SELECT id FROM docs WHERE id IN ({})", ids)]

    def insert(self, first_row: int, ids: list[str], texts: list, metadata: list) -> None:
        """Commit items at rows first_row, first_row+1, … in one transaction (metadata as JSON text)."""
        items = ((first_row + n, *item) for n, item in enumerate(zip(ids, texts, metadata)))
        with self.db:
            self.db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", items)
            self.db.execute("UPDATE meta SET value=? WHERE key='rows'", (str(first_row + len(ids)),))

    def ids_of(self, rows: np.ndarray) -> dict[int, str]:
        values = [int(r) for r in np.unique(rows)]
        return dict(self._select_in("SELECT row, id FROM docs WHERE row IN ({})", values))

    def records(self, ids: list[str]) -> dict[str, tuple[int, str | None, dict | None]]:
        """id → (row, text, metadata) for those of `ids` that exist."""
        query = "SELECT id, row, text, metadata FROM docs WHERE id IN ({})"
        return {i: (row, text, None if meta is None else json.loads(meta))
                for i, row, text, meta in self._select_in(query, ids)}

    def delete(self, ids: list[str]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM docs WHERE id=?", ((i,) for i in ids))

    def _select_in(self, query: str, values: list):
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            yield from self.db.execute(query.format(",".join("?" * len(chunk))), chunk)

    def close(self) -> None:
        self.db.close()
