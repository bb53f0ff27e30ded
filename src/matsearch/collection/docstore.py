"""Ids, text and JSON metadata of a collection's items, in SQLite.

SQLite is also the commit point of an add: vector rows past `rows` (kept in
the meta table) belong to no committed add and are dropped on the next open.
A delete records each removed row in `tombstones` with a rising sequence
number, so a reader learns what changed since it last looked in O(changes).
An upsert is an add whose transaction also tombstones the rows its ids held,
so an id always has exactly one live row; metadata updates rewrite rows in place.
The database runs in WAL mode, so readers never wait for the writer; one
connection serves every thread of a process, one statement at a time.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np

from ..errors import CollectionError

_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS metadata_updates AFTER UPDATE OF metadata ON docs BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'metadata_updates';
END;
"""  # counts metadata rewritten in place, so filters (filters.py) know to re-read it
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT,
    metadata TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tombstones (seq INTEGER PRIMARY KEY AUTOINCREMENT, row INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('rows', '0');
INSERT OR IGNORE INTO meta VALUES ('metadata_updates', '0');
""" + _TRIGGER
_CHUNK = 900  # stays under SQLite's limit on bound parameters


def _guarded(method):
    """Run a DocStore method under its lock, with SQLite's errors turned into CollectionError."""
    def run(self, *args, **kwargs):
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.IntegrityError as exc:
                raise CollectionError(f"document database {self.path} refused the change: {exc}") from None
            except sqlite3.Error as exc:
                raise CollectionError(f"document database {self.path} is unreadable: {exc}") from None
    run.__name__, run.__doc__ = method.__name__, method.__doc__
    return run


class DocStore:
    """Rows of the vector store ↔ user ids, with their text and metadata."""

    def __init__(self, path: Path, *, writable: bool, create: bool = False):
        self.path = Path(path)
        self._lock = threading.RLock()
        if not create and not self.path.exists():
            raise CollectionError(f"document database {self.path} is missing")
        mode = "rwc" if create else "rw" if writable else "ro"
        try:
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode={mode}", uri=True,
                                      check_same_thread=False, timeout=30)
            if writable:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.executescript(_SCHEMA)
                self._migrate_tombstones()
            self.rows()
        except sqlite3.DatabaseError as exc:
            raise CollectionError(f"document database {self.path} is unreadable: {exc}") from None

    def _migrate_tombstones(self) -> None:
        """A collection written before tombstones existed: record its deleted rows, once."""
        if self.db.execute("SELECT 1 FROM meta WHERE key='tombstones'").fetchone():
            return
        with self.db:
            live = np.zeros(self.rows(), dtype=bool)
            live[[r for (r,) in self.db.execute("SELECT row FROM docs")]] = True
            self.db.executemany("INSERT INTO tombstones (row) VALUES (?)", ((int(r),) for r in np.flatnonzero(~live)))
            self.db.execute("INSERT INTO meta VALUES ('tombstones', '1')")

    @_guarded
    def rows(self) -> int:
        """Vector rows committed so far (live and deleted)."""
        return int(self.db.execute("SELECT value FROM meta WHERE key='rows'").fetchone()[0])

    @_guarded
    def version(self) -> int:
        """Changes when another connection commits (SQLite's data_version)."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    @_guarded
    def state(self, since: int) -> tuple[int, np.ndarray, int, int]:
        """(committed rows, rows deleted after tombstone `since`, last tombstone, epoch) read in one transaction."""
        self.db.execute("BEGIN")
        try:
            rows = int(self.db.execute("SELECT value FROM meta WHERE key='rows'").fetchone()[0])
            dead = [(s, r) for s, r in self.db.execute("SELECT seq, row FROM tombstones WHERE seq > ?", (since,))]
            epoch = self.epoch()
        finally:
            self.db.commit()
        last = max((s for s, _ in dead), default=since)
        return rows, np.array([r for _, r in dead], dtype=np.int64), last, epoch

    @_guarded
    def epoch(self) -> int:
        """How many times the rows were renumbered by a compaction (0 if never)."""
        found = self.db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        return 0 if found is None else int(found[0])

    @_guarded
    def renumber(self, epoch: int) -> int:
        """Give the live documents rows 0, 1, … in their order, forget the tombstones and record `epoch`,
        in one transaction (the commit point of a compaction); return the live count."""
        self.db.execute("BEGIN")
        try:
            self.db.execute("CREATE TABLE docs_compact (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, text TEXT, "
                            "metadata TEXT)")
            self.db.execute("INSERT INTO docs_compact SELECT ROW_NUMBER() OVER (ORDER BY row) - 1, id, text, metadata "
                            "FROM docs ORDER BY row")
            self.db.execute("DROP TABLE docs")
            self.db.execute("ALTER TABLE docs_compact RENAME TO docs")
            self.db.execute(_TRIGGER)  # dropped with the old table
            live = int(self.db.execute("SELECT count(*) FROM docs").fetchone()[0])
            self.db.execute("UPDATE meta SET value=? WHERE key='rows'", (str(live),))
            self.db.execute("DELETE FROM tombstones")
            self.db.execute("INSERT INTO meta VALUES ('epoch', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                            (str(epoch),))
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise
        return live

    @_guarded
    def ids_by_row(self, count: int) -> list[str]:
        """Every row's id ('' for deleted rows): the source the id table is rebuilt from."""
        ids = [""] * count
        for row, i in self.db.execute("SELECT row, id FROM docs WHERE row < ?", (count,)):
            ids[row] = i
        return ids

    @_guarded
    def texts(self, lo: int, hi: int) -> tuple[np.ndarray, list[str], int]:
        """Rows in [lo, hi) holding a non-empty text, ascending, their texts, and the epoch of that numbering,
        read in one transaction (the source the lexical index is built from)."""
        self.db.execute("BEGIN")
        try:
            found = self.db.execute("SELECT row, text FROM docs WHERE row >= ? AND row < ? AND text IS NOT NULL "
                                    "AND text <> '' ORDER BY row", (lo, hi)).fetchall()
            epoch = self.epoch()
        finally:
            self.db.commit()
        return np.array([r for r, _ in found], dtype=np.int64), [t for _, t in found], epoch

    @_guarded
    def has_text(self, hi: int) -> bool:
        """Whether a live row below `hi` holds a non-empty text."""
        return self.db.execute("SELECT 1 FROM docs WHERE row < ? AND text IS NOT NULL AND text <> '' LIMIT 1",
                               (hi,)).fetchone() is not None

    @_guarded
    def bump(self) -> None:
        """Commit a change readers must notice that touches no document (an index build)."""
        with self.db:
            self.db.execute("INSERT INTO meta VALUES ('builds', '1') "
                            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")

    @_guarded
    def live_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM docs").fetchone()[0])

    @_guarded
    def live_rows(self) -> np.ndarray:
        return np.fromiter((r for (r,) in self.db.execute("SELECT row FROM docs")), dtype=np.int64)

    @_guarded
    def existing(self, ids: list[str]) -> list[str]:
        """Those of `ids` already in the collection."""
        return [i for (i,) in self._select_in("SELECT id FROM docs WHERE id IN ({})", ids)]

    @_guarded
    def insert(self, first_row: int, ids: list[str], texts: list, metadata: list) -> np.ndarray:
        """Commit items at rows first_row, first_row+1, … in one transaction (metadata as JSON text); an id
        already present is refused. Returns the rows replaced: none."""
        return self._insert(first_row, ids, texts, metadata, replace=False)

    @_guarded
    def upsert(self, first_row: int, ids: list[str], texts: list, metadata: list,
               parents: list[str] | None = None) -> np.ndarray:
        """`insert`, also tombstoning the rows of those ids already present and removing their documents in
        the same transaction, so no reader ever sees an id twice or not at all; returns those old rows.
        `parents`: documents these items are the passages of, each given whole: their other passages go too."""
        return self._insert(first_row, ids, texts, metadata, replace=True, parents=parents)

    def _insert(self, first_row: int, ids: list[str], texts: list, metadata: list, *, replace: bool,
                parents: list[str] | None = None) -> np.ndarray:
        items = [(first_row + n, *item) for n, item in enumerate(zip(ids, texts, metadata))]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            old = [r for (r,) in self._select_in("SELECT row FROM docs WHERE id IN ({})", ids)] if replace else []
            old += self._other_passages(parents, set(ids)) if parents else []
            self.db.executemany("INSERT INTO tombstones (row) VALUES (?)", ((r,) for r in old))
            self.db.executemany("DELETE FROM docs WHERE row=?", ((r,) for r in old))
            self.db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", items)
            self.db.execute("UPDATE meta SET value=? WHERE key='rows'", (str(first_row + len(ids)),))
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise
        return np.array(old, dtype=np.int64)

    def _other_passages(self, parents: list[str], ids: set[str]) -> list[int]:
        """Rows of the passages of `parents` (ids ``<parent>#…`` whose metadata names that parent) not in `ids`."""
        query = "SELECT row, id FROM docs WHERE id >= ? AND id < ? AND metadata ->> '$.parent' = ?"
        return [row for parent in parents for row, i in self.db.execute(query, (f"{parent}#", f"{parent}$", parent))
                if i not in ids]

    @_guarded
    def set_metadata(self, ids: list[str], metadata: list[dict | None], *, merge: bool) -> list[str]:
        """Replace the metadata of `ids` (or, with `merge`, update their top-level keys) in place, in one
        transaction; rows and texts stay as they are. Nothing changes if any id is missing: those are returned."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            stored = dict(self._select_in("SELECT id, metadata FROM docs WHERE id IN ({})", ids))
            missing = [i for i in ids if i not in stored]
            if not missing:
                if merge:
                    metadata = [{**(json.loads(stored[i]) if stored[i] is not None else {}), **(m or {})}
                                for i, m in zip(ids, metadata)]
                self.db.executemany("UPDATE docs SET metadata=? WHERE id=?",
                                    ((None if m is None else json.dumps(m), i) for i, m in zip(ids, metadata)))
            self.db.commit()
        except BaseException:
            self.db.rollback()
            raise
        return missing

    @_guarded
    def records(self, ids: list[str]) -> dict[str, tuple[int, str | None, dict | None]]:
        """id → (row, text, metadata) for those of `ids` that exist."""
        query = "SELECT id, row, text, metadata FROM docs WHERE id IN ({})"
        return {i: (row, text, None if meta is None else json.loads(meta))
                for i, row, text, meta in self._select_in(query, ids)}

    @_guarded
    def delete(self, ids: list[str]) -> None:
        """Remove `ids` and record their rows as tombstones, in one transaction."""
        with self.db:
            rows = [r for (r,) in self._select_in("SELECT row FROM docs WHERE id IN ({})", ids)]
            self.db.executemany("INSERT INTO tombstones (row) VALUES (?)", ((r,) for r in rows))
            self.db.executemany("DELETE FROM docs WHERE id=?", ((i,) for i in ids))

    @_guarded
    def metadata_field(self, path: str, lo: int, hi: int) -> tuple[list[tuple], int]:
        """(row, JSON type, value) of the JSON `path` in the metadata of the rows in [lo, hi) that have it,
        ascending, and the epoch of that row numbering, read in one transaction (what filters read)."""
        self.db.execute("BEGIN")
        try:
            found = self.db.execute(
                "SELECT row, json_type(metadata, ?1), metadata ->> ?1 FROM docs WHERE row >= ?2 AND row < ?3 "
                "AND metadata IS NOT NULL AND json_type(metadata, ?1) IS NOT NULL ORDER BY row", (path, lo, hi)
            ).fetchall()
            epoch = self.epoch()
        finally:
            self.db.commit()
        return found, epoch

    @_guarded
    def metadata_version(self) -> int | None:
        """How many metadata values were rewritten in place (a trigger counts them); None where the trigger
        is missing (a database no writer has opened since it came), so changes cannot be told apart."""
        version, tracked = self.db.execute(
            "SELECT (SELECT value FROM meta WHERE key='metadata_updates'), "
            "EXISTS (SELECT 1 FROM sqlite_master WHERE type='trigger' AND name='metadata_updates')").fetchone()
        return int(version) if tracked and version is not None else None

    def _select_in(self, query: str, values: list):
        rows = []
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            rows.extend(self.db.execute(query.format(",".join("?" * len(chunk))), chunk))
        return rows

    def close(self) -> None:
        with self._lock:
            self.db.close()
