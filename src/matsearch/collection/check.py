"""`matsearch check`: what in a collection's folder is damaged, file by file, without opening it for search.

Each problem names the file, says what is wrong, and whether the file is derived
(rebuilt by `matsearch build`) or primary (restore it from a backup).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CollectionError
from ..recipe import Recipe
from ..store import BlockStore
from ..transform import Transform
from .docstore import DocStore
from .idtable import IdTable
from .lexical import check_lexical
from .manifest import Manifest

_CHUNK = 1 << 18  # rows read at a time


@dataclass
class Problem:
    file: str
    problem: str
    derived: bool

    def __str__(self) -> str:
        fix = "derived: `matsearch build` rebuilds it" if self.derived else "primary data: restore it from a backup"
        return f"{self.file}: {self.problem} ({fix})"


def check_collection(path) -> list[Problem]:
    """Every problem found in the collection at `path` (an empty list for a sound one)."""
    path = Path(path)
    try:
        manifest = Manifest.load(path / "manifest.json")
    except CollectionError as exc:
        return [Problem(str(path / "manifest.json"), str(exc), False)]
    try:
        docs = DocStore(path / "docs.sqlite", writable=False)
    except CollectionError as exc:
        return [Problem(str(path / "docs.sqlite"), str(exc), False)]
    try:
        problems = _check_docs(docs)
        if manifest.dim is None:
            return problems
        rows = docs.rows()
        for check in (_check_transform, _check_vectors, _check_ids, _check_indexes, _check_lexical):
            problems += check(path, manifest, docs, rows)
        return problems
    finally:
        docs.close()


def _check_docs(docs: DocStore) -> list[Problem]:
    try:
        verdict = docs.db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        verdict = str(exc)
    return [] if verdict == "ok" else [Problem(str(docs.path), f"SQLite integrity check: {verdict}", False)]


def _check_transform(path, manifest, docs, rows) -> list[Problem]:
    try:
        Transform.load(path / "transform.npy", kind=manifest.transform, dim=manifest.dim)
    except CollectionError as exc:
        return [Problem(str(path / "transform.npy"), str(exc), False)]
    return []


def _check_vectors(path, manifest, docs, rows) -> list[Problem]:
    try:
        store = BlockStore(path / "vectors", manifest.nesting, rows)
    except CollectionError as exc:
        return [Problem(str(exc).split()[2] if "vector file" in str(exc) else str(path / "vectors"), str(exc), False)]
    problems = [Problem(str(file), message, False) for file, message in store.verify()]
    norms, width = store.folder / "prefix-norms.f32", len(manifest.nesting)
    if not norms.exists() or norms.stat().st_size < 4 * width * rows:
        return problems + [Problem(str(norms), f"missing or shorter than the {rows} committed rows", True)]
    on_disk = np.memmap(norms, dtype=np.float32, mode="r", shape=(rows, width)) if rows else np.zeros((0, width))
    for lo in range(0, rows, _CHUNK):
        hi = min(rows, lo + _CHUNK)
        if not np.allclose(on_disk[lo:hi], store.recompute_norms(lo, hi), rtol=1e-4, atol=1e-5):
            problems.append(Problem(str(norms), "prefix norms disagree with the vector blocks", True))
            break
    return problems


def _check_ids(path, manifest, docs, rows) -> list[Problem]:
    folder = path / "ids"
    if not IdTable.exists(folder, rows):
        return [Problem(str(folder), f"id table missing or shorter than the {rows} committed rows", True)]
    try:
        table = IdTable(folder, rows)
        expected = docs.ids_by_row(rows)
        live = np.array([bool(i) for i in expected], dtype=bool)
        found = table.lookup(np.flatnonzero(live)) if live.any() else []
        wrong = [r for r, a, b in zip(np.flatnonzero(live), found, (i for i in expected if i)) if a != b]
    except CollectionError as exc:
        return [Problem(str(folder), str(exc), True)]
    if wrong:
        return [Problem(str(folder), f"{len(wrong)} rows map to the wrong id (first: row {wrong[0]})", True)]
    return []


def _check_indexes(path, manifest, docs, rows) -> list[Problem]:
    try:
        store = BlockStore(path / "vectors", manifest.nesting, rows)
    except CollectionError:
        return []  # reported with the vectors; indexes cannot be checked without them
    problems = []
    for part in Recipe.parse(manifest.recipe).parts:
        file = path / manifest.indexes / part.file
        try:
            part.make(manifest.metric).load(file, store)
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            problems.append(Problem(str(file), f"{type(exc).__name__}: {exc}", True))
    return problems


def _check_lexical(path, manifest, docs, rows) -> list[Problem]:
    return [Problem(file, problem, True) for file, problem in check_lexical(path, docs, rows)]
