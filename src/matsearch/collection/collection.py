"""A persistent collection: vectors stored once, ids/text/metadata in SQLite, one transform.

Folder layout::

    manifest.json      format version and settings
    docs.sqlite        ids, text, JSON metadata; the commit point of every add
    transform.npy      the fitted elastic transform (absent for `none`)
    vectors/           column blocks of the transformed vectors (see store.py)
    ids/               row → id, memory-mapped (ids.utf8, ids.ends); derived from docs.sqlite
    indexes*/          the recipe's indexes (ivf.npz, hnsw.faiss, pq.faiss, codes.npz), derived from vectors/;
                       the manifest names the folder (each build writes a new one)
    lexical.N/         the BM25 index of the texts (lexical.py), derived from docs.sqlite; saved by the writer's close
    commits.u64        a counter the writer bumps after every commit, polled by readers
    .lock              held by the one writer
    elasticize.*/      only while a new transform is swapped in (see refit.py)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import _kernels
from ..encoder import DEFAULT_MODEL, UsesModel, model_dimension
from ..errors import CollectionError, InvalidInputError, MatsearchError
from ..matryoshka import check_dims, check_nesting, check_vectors, default_dims, default_nesting, normalize
from ..plan import INDEX_KINDS, Plan, as_plan
from ..recipe import Recipe
from ..results import Cost, SearchResult
from ..search import check_k, run_checked
from ..store import BlockStore
from ..transform import FIT_SAMPLE, Transform
from ..tuning import DEFAULT_TARGET, Calibration
from . import compact as compaction
from . import drift, filters, hybrid, passages, query_encoder
from .check import check_collection
from .commits import CommitCounter
from .docstore import DocStore
from .idtable import IdTable
from .lexical import Lexical, is_lexical_file
from .lock import WriterLock
from .tune import calibrate
from .manifest import Manifest
from .refit import READY, fsync_tree, roll_forward, stage
from .rwlock import ReadWriteLock

log = logging.getLogger(__name__)
COUNTER = "commits.u64"
_REFRESH_TRIES = 3
CALIBRATION = "calibration.json"  # derived: settings measured by `tune`, with what they were measured on
_OPEN_TRIES = 40  # × 50 ms: how long an open waits for a compaction's files to arrive


class CompactingError(CollectionError):
    """SQLite is one compaction ahead of the files: a moment's state, retried."""


@dataclass
class Record:
    """One stored item; `vector` is as stored, i.e. after the collection's transform."""

    id: str
    text: str | None
    metadata: dict | None
    vector: np.ndarray


class Collection(UsesModel):
    """Open with `Collection.create` or `Collection.open`; close (or use `with`) when done.

    A reader sees what writers commit: each call compares the collection's commit
    counter with the one its state was read at and, when another process committed,
    reads the rows added and deleted since (O(changes)), so one search always runs
    on one consistent state. Many threads may search one Collection at once.
    """

    def __init__(self, path: Path, manifest: Manifest, *, writable: bool, new: bool = False,
                 on_disk: bool | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self.writable = writable
        self._on_disk = on_disk  # None: the manifest's setting
        self._fitted: Transform | None = None  # a transform given to `create`, saved by the first add
        self._docs = self._store = self._transform = self._encoder = self._ids = self._counter = None
        self._indexes, self._broken, self._saved_rows, self._plans = {}, {}, {}, {}
        self._calibrated: tuple[int, Calibration] | None = None  # (file mtime, calibration) read last
        self._calibration_path = str(self.path / CALIBRATION)
        self._mixed = 0.0  # a recall target's running share of calls owed to the dearer of its two plans
        self._lexical = Lexical(self.path)  # BM25 over the texts (lexical.py), loaded by the first lexical search
        self._filters = filters.FilterCache()  # metadata filters: parsed, field columns, row masks (filters.py)
        self._dead, self._n_dead, self._tomb_seq = np.zeros(0, dtype=bool), 0, 0
        self._rw = ReadWriteLock()
        self._lock = WriterLock(self.path / ".lock").acquire() if writable else None
        self._release = weakref.finalize(self, self._lock.release) if self._lock else None
        try:
            if writable and roll_forward(self.path):  # a transform swap that a crash interrupted
                self.manifest = Manifest.load(self.path / "manifest.json")
            elif not writable and (self.path / READY).exists():
                raise CollectionError(f"collection {self.path} is being switched to a new transform (elasticize); "
                                      "open it again when that ends, or open it writable to finish an interrupted one")
            self._docs = DocStore(self.path / "docs.sqlite", writable=writable, create=new)
            if writable and compaction.roll_forward(self.path, self._docs):  # a compaction a crash interrupted
                self.manifest = Manifest.load(self.path / "manifest.json")
            if writable:
                _remove_stale_index_folders(self.path, self.manifest.indexes)
            self._counter = CommitCounter.open(self.path / COUNTER, writable=writable)
            self._seen = self._commit_mark()
            if self.manifest.dim is not None:
                self._load_state_settled()
            if writable:
                self._counter.bump()  # readers re-read whatever a crashed writer may have left uncounted
                self._seen = self._commit_mark()
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, path, *, model: str | None = DEFAULT_MODEL, metric: str = "cosine",
               transform: "str | Transform" = "pca", nesting: list[int] | None = None,
               on_disk: bool = False) -> "Collection":
        """Make a new, empty collection folder (its dim is set by the first add). `model` embeds texts
        added and queries; with None the collection holds precomputed vectors and is searched by vector.
        `metric`: "cosine", "ip" (inner product) or "l2" (Euclidean: results nearest first, scored by minus the
        squared distance on the plan's last prefix, −‖q − x‖²); every score is higher-is-better.
        `on_disk`: a store that need not fit in RAM: re-ranks read their rows with direct I/O, a few sectors a
        row, never through the page cache (direct_rows.py); give it a `nesting` whose first block is 128 dims
        or more (e.g. [128, 256, 384]) so that a re-ranked row is one read.
        `transform`: "pca", "adapter", "general" (shipped, for all-MiniLM-L6-v2; own PCA where that does better
        on held-back documents) or "none", fitted on the first add; or a fitted `Transform`, used as it is
        (the shards of one sharded collection share one: see matsearch.distributed)."""
        path = Path(path)
        if (path / "manifest.json").exists():
            raise CollectionError(f"a collection already exists at {path}")
        fitted = transform if isinstance(transform, Transform) else None
        manifest = Manifest(model=model, metric=metric, transform=transform if fitted is None else fitted.fitted_kind,
                            nesting=None if nesting is None else list(nesting), on_disk=on_disk).check()
        path.mkdir(parents=True, exist_ok=True)
        manifest.save(path / "manifest.json")
        collection = cls(path, manifest, writable=True, new=True)
        collection._fitted = fitted
        return collection

    @classmethod
    def open(cls, path, *, writable: bool = False, on_disk: bool | None = None) -> "Collection":
        """Open an existing collection; only one writer at a time. `on_disk`: read re-ranked rows with
        direct I/O (True) or through the page cache (False) this time; None: as the collection was created."""
        path = Path(path)
        if not path.is_dir():
            raise CollectionError(f"no collection at {path}: folder does not exist")
        if on_disk not in (None, True, False):
            raise InvalidInputError(f"on_disk must be true, false or None, got {on_disk!r}")
        return cls(path, Manifest.load(path / "manifest.json"), writable=writable, on_disk=on_disk)

    # -- state ---------------------------------------------------------------

    def _commit_mark(self) -> int:
        """What changes when anyone commits: the commit counter, or SQLite's data version without one."""
        return self._counter.read() if self._counter is not None else self._docs.version()

    def _load_state_settled(self) -> None:
        """`_load_state`, waiting out the moment between a compaction's commit and its files' arrival."""
        for attempt in range(_OPEN_TRIES):
            try:
                return self._load_state()
            except CompactingError:
                if attempt == _OPEN_TRIES - 1:
                    raise
                time.sleep(0.05)
                self.manifest = Manifest.load(self.path / "manifest.json")

    def _load_state(self) -> None:
        """Read everything from disk: transform, store, id table, deletions, indexes (O(N))."""
        m = self.manifest
        rows, dead, tomb_seq, epoch = self._docs.state(0)
        if epoch > m.epoch:
            raise CompactingError(f"collection {self.path} is being compacted; open it again in a moment, or open it "
                                  "writable to finish a compaction that was cut short")
        self._tomb_seq = tomb_seq
        self._transform = Transform.load(self.path / "transform.npy", kind=m.transform, dim=m.dim)
        self._store = BlockStore(self.path / "vectors", m.nesting, rows, writable=self.writable,
                                 on_disk=m.on_disk if self._on_disk is None else self._on_disk)
        if self.writable:
            self._store.truncate(rows)  # the tail of an add that crashed before its commit
        self._ids = self._open_ids(rows)
        self._dead, self._n_dead = np.zeros(rows, dtype=bool), 0
        self._mark_dead(dead)
        self._load_indexes()

    def _open_ids(self, rows: int) -> "IdTable | MemoryIds":
        """The id table, or — when it is missing or damaged (it is derived) — one rebuilt from SQLite:
        on disk by the writer, in memory by a reader."""
        folder = self.path / "ids"
        if IdTable.exists(folder, rows):
            try:
                table = IdTable(folder, rows)
                if self.writable:
                    table.truncate(rows)
                return table
            except CollectionError as exc:
                log.warning("%s; rebuilding the id table from %s", exc, self._docs.path)
        if self.writable:
            return IdTable.write(folder, self._docs.ids_by_row(rows))
        return MemoryIds(self._docs.ids_by_row(rows))

    def _remap_ids(self, rows: int) -> "IdTable | MemoryIds":
        if isinstance(self._ids, IdTable):
            try:
                return self._ids.remap(rows)
            except CollectionError as exc:
                log.warning("%s; reading ids from %s instead", exc, self._docs.path)
        return MemoryIds(self._docs.ids_by_row(rows))

    def _load_indexes(self) -> None:
        """The recipe's indexes from their files, extended to the store; an unreadable one is set aside
        (exact plans still work) and named by every plan that needs it."""
        self._indexes, self._broken, self._saved_rows = {}, {}, {}
        folder = self.path / self.manifest.indexes
        for part in Recipe.parse(self.manifest.recipe).parts:
            try:
                index = part.make(self.manifest.metric).load(folder / part.file, self._store)
                self._saved_rows[part.kind] = index.indexed_
                self._indexes[part.kind] = index.extend(self._store)  # rows added since the file was written
            except Exception as exc:  # noqa: BLE001 - any damage to a derived file must not lock the collection
                reason = str(exc) if isinstance(exc, CollectionError) else \
                    f"index file {folder / part.file} is unreadable ({type(exc).__name__}: {exc})"
                self._broken[part.kind] = reason
                log.warning("%s; exact plans still work, `matsearch build` rebuilds it", reason)

    def _mark_dead(self, rows: np.ndarray) -> None:
        """Grow the dead-row mask to the store and mark `rows` deleted."""
        count = self._store.count
        if len(self._dead) < count:
            grown = np.zeros(max(count, 2 * len(self._dead)), dtype=bool)
            grown[: len(self._dead)] = self._dead
            self._dead = grown
        if len(rows):
            rows = rows[rows < count]
            self._n_dead += int(np.count_nonzero(~self._dead[rows]))
            self._dead[rows] = True

    def _sync(self) -> None:
        """Pick up what another process committed since we last looked (a no-op for an unchanged collection)."""
        mark = self._commit_mark()
        if mark == self._seen:
            return
        with self._rw.writing():
            mark = self._commit_mark()
            if mark == self._seen:
                return
            for attempt in range(_REFRESH_TRIES):
                try:
                    self._refresh()
                    self._seen = mark
                    return
                except (CollectionError, OSError, ValueError) as exc:
                    failure = exc
                    time.sleep(0.01 * 2 ** attempt)
            log.warning("collection %s: refresh failed (%s); serving the last state read, will retry", self.path,
                        failure)

    def _refresh(self) -> None:
        """Move this process's state to what is committed now, reading only what changed."""
        manifest = Manifest.load(self.path / "manifest.json")
        if (self.path / READY).exists():
            raise CollectionError(f"collection {self.path} is being switched to a new transform")
        reload = self._store is None or (manifest.epoch, manifest.dim) != (self.manifest.epoch, self.manifest.dim)
        rebuilt = (manifest.recipe, manifest.indexes) != (self.manifest.recipe, self.manifest.indexes)
        self.manifest = manifest
        if manifest.dim is None:
            return
        if reload:
            return self._load_state()
        rows, dead, tomb_seq, epoch = self._docs.state(self._tomb_seq)
        if epoch > manifest.epoch:  # a compaction committed; its files are not all in place yet
            raise CompactingError(f"collection {self.path} is being compacted")
        self._tomb_seq = tomb_seq
        if rows != self._store.count:
            self._store.grow(rows)
            self._ids = self._remap_ids(rows)
        self._mark_dead(dead)
        if rebuilt:
            self._load_indexes()
        else:
            for index in self._indexes.values():
                index.extend(self._store)

    def _committed(self) -> None:
        """After this writer committed: tell readers, and do not refresh from our own commit."""
        self._counter.bump()
        self._seen = self._commit_mark()

    # -- writing -------------------------------------------------------------

    def add(self, ids, *, texts=None, vectors=None, metadata=None, upsert: bool = False,
            progress: bool = False, passages_of: list[str] | None = None) -> int:
        """Add items (their vectors, or texts to embed); all or none are committed.

        An id already in the collection is an error, unless `upsert`: then its item is replaced whole — vector,
        text and metadata become what this call gives (a text or metadata not given becomes None). The new
        version is appended as a new row and the old row tombstoned in the transaction that commits it, so
        a reader sees the old version or the new one, never both or neither; indexes follow as for an add and
        a delete (the old row stays in the store, skipped, until `compact`).

        `passages_of` (an upsert of passages, see passages.py): the documents these items are passages of, each
        given whole, so their passages not among `ids` are deleted in the same transaction.
        """
        self._require_writable()
        if passages_of is not None and not upsert:
            raise InvalidInputError(f"passages_of={passages_of[:5]!r} replaces documents' passages: it needs "
                                    "upsert=True")
        ids = _check_ids(ids)
        texts = _check_texts(texts, len(ids))
        metadata = _metadata_json(metadata, len(ids))
        vectors = self.vectors_for(len(ids), texts, vectors, progress=progress)
        taken = [] if upsert else self._docs.existing(ids)
        if taken:
            raise InvalidInputError(f"ids already in the collection: {taken[:5]}; an upsert replaces them "
                                    "(add(..., upsert=True), Collection.upsert, matsearch index --upsert)")
        if self.manifest.metric == "cosine":
            vectors = normalize(vectors)
        with self._rw.staging():  # the rows written and flushed past what searches see, beside them
            first_add, nesting = self._store is None, self.manifest.nesting
            if first_add:
                with self._rw.writing():
                    self._fix_dim(vectors, progress)
            first_row = self._store.count
            try:
                self._store.append(self._transform.apply(vectors), visible=False)
                self._ids.append(first_row, ids, visible=False)
            except BaseException:
                with self._rw.writing():
                    self._roll_back_add(first_add, nesting, first_row)
                raise
            texts = texts or [None] * len(ids)
            with self._rw.writing():  # then shown and committed (or dropped), searches held off throughout
                try:
                    self._store.grow(first_row + len(ids))
                    self._ids.grow(first_row + len(ids))
                    replaced = self._docs.upsert(first_row, ids, texts, metadata, passages_of) if upsert \
                        else self._docs.insert(first_row, ids, texts, metadata)
                except BaseException:
                    self._roll_back_add(first_add, nesting, first_row)
                    raise
                self._committed()
                self._mark_dead(replaced)
                for index in self._indexes.values():  # in memory; the files catch up on close (or on open)
                    index.extend(self._store)
        return len(ids)

    def _roll_back_add(self, first_add: bool, nesting: list[int] | None, first_row: int) -> None:
        """Drop the rows of an add that never committed (for the first add, the dim it set too)."""
        if first_add:
            self._undo_first_add(nesting)
        else:
            self._store.truncate(first_row)
            self._ids.truncate(first_row)

    def upsert(self, ids, *, texts=None, vectors=None, metadata=None, progress: bool = False) -> int:
        """Add items, replacing whole any whose id is already in the collection: `add(..., upsert=True)`."""
        return self.add(ids, texts=texts, vectors=vectors, metadata=metadata, upsert=True, progress=progress)

    def update_metadata(self, ids, metadata, *, merge: bool = False) -> int:
        """Set the metadata of existing items, in place (vectors, texts and indexes untouched), all or none.

        `metadata`: one dict (or None) per id, or a single dict for every id. By default each item's
        metadata is replaced by the one given (None clears it); with `merge=True` the given keys are set
        and the item's other top-level keys kept. An id not in the collection is an error naming it.
        """
        self._require_writable()
        ids = _check_ids(ids)
        if isinstance(metadata, dict):
            metadata = [metadata] * len(ids)
        encoded = _metadata_json(metadata, len(ids))  # checks each entry
        if merge and None in encoded:
            raise InvalidInputError(f"metadata[{encoded.index(None)}] is None; merge=True needs a dict of the keys "
                                    "to set (merge=False with None clears an item's metadata)")
        values = [None if m is None else json.loads(m) for m in encoded]
        missing = self._docs.set_metadata(ids, values, merge=merge)  # no in-memory state changes: searches go on
        if missing:
            raise InvalidInputError(f"ids not in the collection: {missing[:5]}")
        with self._rw.writing():
            self._committed()
        return len(ids)

    def _fix_dim(self, vectors: np.ndarray, progress: bool = False) -> None:
        """On the first add: set the dim and nesting, fit the transform, create the store."""
        m = self.manifest
        dim = vectors.shape[1]
        width = None if m.model is None else model_dimension(m.model)
        if width is not None and width != dim:
            raise InvalidInputError(f"the vectors are {dim} wide but the collection's model {m.model!r} embeds "
                                    f"{width} dims, so text queries could not be searched; give {width}-dim vectors, "
                                    "or create the collection with the model that made them (or model=None)")
        nesting = check_nesting(m.nesting or default_nesting(dim), dim)
        fitted = self._fitted
        if fitted is not None and fitted.matrix_ is not None and fitted.matrix_.shape != (dim, dim):
            raise InvalidInputError(f"the transform given to create maps {fitted.matrix_.shape[0]} dims, the vectors "
                                    f"have {dim}")
        if fitted is None and m.transform == "pca" and len(vectors) < dim:
            raise InvalidInputError(
                f"the PCA transform is fitted on the first add, which needs at least {dim} vectors (got "
                f"{len(vectors)}); add more at once, or create the collection with transform='general' "
                "(all-MiniLM-L6-v2 vectors) or 'none'"
            )
        fitted = fitted or Transform(kind=m.transform).fit(vectors, nesting=nesting, progress=progress)
        fitted.save(self.path / "transform.npy")
        BlockStore.create(self.path / "vectors", nesting)
        IdTable.write(self.path / "ids", [])
        m.dim, m.nesting = dim, nesting
        m.save(self.path / "manifest.json")
        self._load_state()

    def _undo_first_add(self, nesting: list[int] | None) -> None:
        self.manifest.dim, self.manifest.nesting = None, nesting
        self.manifest.save(self.path / "manifest.json")
        (self.path / "transform.npy").unlink(missing_ok=True)
        shutil.rmtree(self.path / "vectors", ignore_errors=True)
        shutil.rmtree(self.path / "ids", ignore_errors=True)
        self._store = self._transform = self._ids = None

    def build(self, recipe: "Recipe | str", *, trained: Path | None = None, progress: bool = False) -> "Recipe":
        """Build the recipe's indexes over the stored vectors and save them, replacing earlier ones.

        `trained`: a folder of the recipe's index files trained elsewhere, on vectors in this collection's
        space, and holding no rows (see matsearch.distributed.trained); their centroids, codebooks and
        projections are used as they are and only this collection's rows are assigned and coded (a graph,
        which learns nothing but its links, is built here). The shards of one collection share them so.

        The new index files are written into a folder of their own; the manifest naming
        that folder is the commit point, so a crash leaves the old indexes or the new ones.
        Rows added later join the indexes as they come; deleted rows are skipped at once.
        Building again (re-training) is how an index follows drifted data, and how a lost
        or damaged index file is restored.
        """
        self._require_writable()
        store = self._searchable()
        recipe = (Recipe.parse(recipe) if isinstance(recipe, str) else recipe).check(store.dim, store.nesting)
        name = _next_index_folder(self.path)
        staging = self.path / f"{name}.staging"
        staging.mkdir()
        built = {}
        for part in recipe.parts:
            index = part.make(self.manifest.metric)
            if trained is None or part.kind == "g":
                index.build(store, progress=progress)
            else:
                index.load(Path(trained) / part.file, store).extend(store)
            index.save(staging / part.file)
            built[part.kind] = index
        fsync_tree(staging)
        os.rename(staging, self.path / name)
        with self._rw.writing():
            old = self.manifest.indexes
            self.manifest = replace(self.manifest, recipe=str(recipe), indexes=name)
            self.manifest.save(self.path / "manifest.json")  # the commit point
            self._docs.bump()
            self._committed()
            self._indexes, self._broken = built, {}
            self._saved_rows = {kind: index.indexed_ for kind, index in built.items()}
        shutil.rmtree(self.path / old, ignore_errors=True)
        return recipe

    def compact(self, *, progress: bool = False) -> dict:
        """Rewrite the store, id table and indexes without the deleted rows (see `compact.py`); a crash
        leaves the collection as it was or compacted. Returns the rows removed and kept."""
        self._require_writable()
        with self._rw.staging():  # searches go on meanwhile; this process's writes wait
            count, before = self._store.count if self._store else 0, self.manifest
            if self._store is None or not self._n_dead:
                return {"removed": 0, "count": count, "seconds": 0.0}
            start = time.perf_counter()
            live = np.flatnonzero(~self._dead[:count])
            staged = compaction.stage(self.path, self._store, self._ids, live, before, progress=progress)
            with self._rw.writing():
                self._docs.renumber(staged.epoch)  # the commit point
                compaction.roll_forward(self.path, self._docs)
                self.manifest = Manifest.load(self.path / "manifest.json")
                self._committed()
                self._load_state()
        if before.indexes != "indexes":
            shutil.rmtree(self.path / before.indexes, ignore_errors=True)
        return {"removed": count - len(live), "count": len(live), "seconds": time.perf_counter() - start}

    def repair(self, *, progress: bool = False) -> list[str]:
        """Rebuild every damaged derived file from the store and SQLite — prefix norms, the id
        table, unusable indexes, the lexical index — and return the files rebuilt. Damaged primary data (the
        vector blocks, SQLite, the transform) cannot be rebuilt and is named in the error."""
        self._require_writable()
        problems = check_collection(self.path)
        primary = [str(p) for p in problems if not p.derived]
        if primary:
            raise CollectionError(f"collection {self.path} has damaged primary data: {'; '.join(primary)}")
        rebuilt = []
        with self._rw.writing():
            for problem in problems:
                if problem.file.endswith("prefix-norms.f32"):
                    self._store.rewrite_norms()
                elif Path(problem.file) == self.path / "ids":
                    self._ids = IdTable.write(self.path / "ids", self._docs.ids_by_row(self._store.count))
                else:
                    continue
                rebuilt.append(problem.file)
        if any(is_lexical_file(self.path, p.file) for p in problems):
            rebuilt.append(str(self._lexical.persist(self._docs, self._store.count, self.manifest.epoch, rebuild=True)))
        if self._broken or any(p.file.startswith(str(self.path / self.manifest.indexes)) for p in problems):
            self.build(self.manifest.recipe, progress=progress)
            rebuilt += [str(self.path / self.manifest.indexes / part.file)
                        for part in Recipe.parse(self.manifest.recipe).parts]
        if rebuilt:
            self._docs.bump()
            self._committed()
        return rebuilt

    def elasticize(self, method: str = "adapter", *, dims: list[int] | None = None,
                   pairs: list[tuple[str, str]] | None = None, seed: int = 0, progress: bool = False) -> dict:
        """Re-fit the collection's transform (`pca` or `adapter`) on its stored vectors so the
        prefixes in `dims` (default: 16, 32, 64, … below the full dim) are good, optionally
        supervised by (query text, relevant document text) `pairs`; re-rotate the store and
        rebuild the indexes to match. A crash leaves either the old collection or the new one.
        The unsupervised adapter's summary holds its `validation` on held-back documents: per dim,
        recall for PCA and the adapter, the dims it improved and whether it fell back to PCA
        (then the transform is `pca`)."""
        self._require_writable()
        store = self._searchable()
        if method not in ("pca", "adapter"):
            raise InvalidInputError(f"elasticize method {method!r} is not one of ('pca', 'adapter')")
        dims = default_dims(store.dim) if dims is None else check_dims(dims, store.dim)
        live = np.flatnonzero(~self._dead[: store.count])
        if len(live) > FIT_SAMPLE:
            live = np.sort(np.random.default_rng(seed).choice(live, FIT_SAMPLE, replace=False))
        transform = Transform(kind=method).fit(self._transform.restore(store.rows(live)), nesting=dims,
                                               pairs=self._pair_vectors(pairs), seed=seed, progress=progress)
        manifest = replace(self.manifest, transform=transform.fitted_kind, indexes="indexes",
                           epoch=self.manifest.epoch + 1)
        stage(self.path, store, self._transform, transform, manifest, progress=progress)
        with self._rw.writing():
            roll_forward(self.path)
            _remove_stale_index_folders(self.path, "indexes")
            self.manifest = Manifest.load(self.path / "manifest.json")
            self._docs.bump()
            self._committed()
            self._load_state()
        summary = {"transform": transform.fitted_kind, "dims": dims, "fitted_on": len(live),
                   "pairs": len(pairs or []), "recipe": self.manifest.recipe}
        return summary if transform.validation_ is None else {**summary, "validation": transform.validation_}

    def _pair_vectors(self, pairs) -> tuple[np.ndarray, np.ndarray] | None:
        """(query, relevant document) texts embedded by the collection's encoder, raw (untransformed)."""
        if pairs is None:
            return None
        if not pairs or any(len(p) != 2 or not all(isinstance(t, str) and t.strip() for t in p) for p in pairs):
            raise InvalidInputError("pairs must be a non-empty list of (query text, relevant document text)")
        queries, documents = (self.encoder.encode([p[n] for p in pairs]) for n in (0, 1))
        if self.manifest.metric == "cosine":
            queries, documents = normalize(queries), normalize(documents)
        return queries, documents

    def delete(self, ids) -> int:
        """Remove items by id; they never come back from a search."""
        self._require_writable()
        ids = _check_ids(ids)
        found = self._docs.records(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise InvalidInputError(f"ids not in the collection: {missing[:5]}")
        with self._rw.writing():
            self._docs.delete(ids)
            self._committed()
            self._mark_dead(np.array([found[i][0] for i in ids], dtype=np.int64))
        return len(ids)

    # -- reading -------------------------------------------------------------

    def get(self, ids) -> list[Record]:
        """Stored records for `ids`, in the order asked."""
        ids = _check_ids(ids)
        self._sync()
        with self._rw.reading():
            found = self._docs.records(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise InvalidInputError(f"ids not in the collection: {missing[:5]}")
        for attempt in range(_REFRESH_TRIES):
            with self._rw.reading():
                if self._store is not None and max(found[i][0] for i in ids) < self._store.count:
                    vectors = self._store.rows(np.array([found[i][0] for i in ids]))
                    return [Record(i, found[i][1], found[i][2], v) for i, v in zip(ids, vectors)]
            # SQLite already shows a row (an add, or an upsert's new version) that the commit counter has not
            # announced yet: read the state in now, whatever the counter says (the row's vectors are on disk)
            self._seen = None
            self._sync()
        raise CollectionError(f"collection {self.path}: rows of {ids[:5]} are committed but could not be read in")

    def existing(self, ids) -> list[str]:
        """The ids among `ids` that the collection holds."""
        ids = _check_ids(ids)
        with self._rw.reading():
            return self._docs.existing(ids)

    def sample(self, count: int, *, seed: int = 0) -> np.ndarray:
        """Stored vectors (as stored: after the transform) of up to `count` live items drawn at random, in row
        order: what indexes trained elsewhere are fitted on (see matsearch.distributed)."""
        self._sync()
        with self._rw.reading():
            if self._store is None:
                return np.zeros((0, 0), dtype=np.float32)
            live = np.flatnonzero(~self._dead[: self._store.count])
            if len(live) > count:
                live = np.sort(np.random.default_rng(seed).choice(live, count, replace=False))
            return self._store.rows(live)

    def search(self, queries, *, k: int = 10, plan: Plan | str | None = None, mode: str | None = None,
               fusion=None, query_vectors=None, target_recall: float | None = None, max_ms: float | None = None,
               max_cost: float | None = None, filter=None, parents: bool = False, encoder: str = "auto") -> SearchResult:
        """Top-k ids per query. `queries`: a text, a list of texts, or vectors (1-D or 2-D).

        `mode`: "dense" (the plan over the vectors), "lexical" (BM25 over the items' texts) or "hybrid"
        (both, fused by `fusion`: "rrf:k60:n100" by default, or e.g. "weighted:w0.5"); default: hybrid for
        text queries on a collection holding text, dense otherwise (see hybrid.py). `query_vectors`:
        the texts' vectors, already embedded, for the dense half of a hybrid search.

        Instead of a plan, a calibrated collection (`tune`) takes a target: `target_recall` (mean
        recall@k against exact search: queries are shared between the two frontier hull plans around it, in the
        proportion that meets it), `max_ms` (95% of queries within it) or `max_cost` (multiply-adds per query);
        with neither plan nor target it serves recall 0.95 (exact search until calibrated). Under a recall target a
        dense query scoring its top-1 below what calibration saw is searched again with more effort (drift.py).

        `filter`: a metadata filter, a dict or its JSON text, e.g. {"year": {"$gte": 2020}} (filters.py):
        every mode then sees only the items it matches, and returns all of them where fewer than k match.

        `parents`: for a collection of passages (ingested with chunking), each parent document once, ranked and
        scored by its best passage (passages.py).

        `encoder`: the sub-model that embeds text queries: "full" (the collection's model), "fast" (its student,
        about 2x quicker, for the default model only; see README "Query encoding speed") or "auto" (the full model,
        unless a `max_ms` budget fits only with the fast one); documents are always the full model's, and vector
        queries ignore it. A text query's `max_ms` counts its encoder's calibrated time.
        """
        if encoder not in ("auto", "full") or (max_ms is not None and type(queries) is not np.ndarray
                                              and query_vectors is None and mode != "lexical"):  # texts to embed
            return query_encoder.search(self, queries, encoder, k=k, plan=plan, mode=mode, fusion=fusion,
                                        query_vectors=query_vectors, target_recall=target_recall, max_ms=max_ms,
                                        max_cost=max_cost, filter=filter, parents=parents)
        if parents:
            return passages.search_parents(self, queries, k=k, plan=plan, mode=mode, fusion=fusion,
                                           query_vectors=query_vectors, target_recall=target_recall, max_ms=max_ms,
                                           max_cost=max_cost, filter=filter)
        target = split = guard = None
        if plan is None or target_recall is not None or max_ms is not None or max_cost is not None:
            plan, target, split, guard = self._targeted(plan, target_recall, max_ms, max_cost)
        if filter is not None:  # metadata filters: filters.py
            result = filters.search(self, queries, k=k, plan=plan, mode=mode, fusion=fusion,
                                    query_vectors=query_vectors, filter=filter)
            result.target = target
            return result
        if type(queries) is not np.ndarray or mode is not None or fusion is not None or query_vectors is not None:
            if (mode != "dense" and (mode is not None or hybrid.is_text(queries))) or fusion is not None \
                    or query_vectors is not None:
                result = hybrid.search(self, queries, k=k, plan=plan, mode=mode, fusion=fusion,
                                       query_vectors=query_vectors)
                result.target = target
                return result
            queries = self._encoded(queries)
        if split is not None:  # a recall target between two frontier plans: each gets its share of queries
            if np.ndim(queries) == 2 and len(queries) > 1:
                result = self._split_search(queries, k, plan, *split, target)
                return result if guard is None else drift.guarded(self, np.asarray(queries), result, k, guard)
            self._mixed += split[1]  # one query per call: error diffusion over calls
            plan, self._mixed = (plan, self._mixed - 1) if self._mixed >= 1 else (split[0], self._mixed)
        self._sync()
        raw = check_vectors(queries, self.manifest.dim, what="queries")
        with self._rw.reading():
            store, plan, index = self._ready(plan)
            check_k(k, store.count - self._n_dead)
            result = self._answered(lambda: run_checked(
                store, self._transform.apply(raw), plan, k, self.manifest.metric, self._n_dead, None,
                self._dead[: store.count] if self._n_dead else None, index))
        result.target = target
        return result if guard is None else drift.guarded(self, raw, result, k, guard)  # queries unlike calibration's

    def tune(self, queries=None, *, sample: int = 1000, k: int = 10, timed: int = 200, seed: int = 0,
             pseudo: str = "auto", progress: bool = False) -> Calibration:
        """Calibrate: measure recall@k, latency and cost of a grid of settings over every index this
        collection holds, on `queries` (raw vectors or texts: a query log) or on `sample` pseudo-queries
        drawn from the stored items (`pseudo`: "spans" of their texts, "noise" on their vectors, or "auto":
        spans where there is text and a model), and save the result with the collection (`calibration.json`).
        Targets (`search(target_recall=…)`) choose from its Pareto frontier."""
        self._require_writable()
        calibration = calibrate(self, queries, sample=sample, k=k, timed=timed, seed=seed, pseudo=pseudo,
                                progress=progress)
        calibration.save(self.path / CALIBRATION)
        return calibration

    def calibration(self) -> Calibration | None:
        """The saved calibration (None before `tune`)."""
        path = self._calibration_path
        try:
            stamp = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return None
        if self._calibrated is None or self._calibrated[0] != stamp:
            self._calibrated = (stamp, Calibration.load(path))
        return self._calibrated[1]

    def _targeted(self, plan, target_recall, max_ms, max_cost):
        """(the plan to run, the target it serves, the recall target's split and drift guard: see
        `Calibration.serve`; None where none) for a search's plan and targets."""
        asked = any(t is not None for t in (target_recall, max_ms, max_cost))
        if asked and plan is not None:
            raise InvalidInputError("give a plan or a target (target_recall, max_ms, max_cost), not both")
        try:
            calibration = self.calibration()
        except CollectionError:
            if asked:
                raise
            calibration = None  # derived data: a damaged file never stops a plain search (exact, as before tune)
        m = self.manifest
        usable = calibration is not None and calibration.stale(rows=calibration.rows, recipe=m.recipe,
                                                               indexes=m.indexes, epoch=m.epoch) is None
        if not asked:
            if not usable:
                return plan, None, None, None  # no calibration (or one of other indexes): exact search, as always
            target_recall = DEFAULT_TARGET
        elif not usable:
            why = "is not calibrated" if calibration is None else "was calibrated on other indexes"
            raise InvalidInputError(f"collection {self.path} {why}: run `matsearch tune {self.path}` before "
                                    "searching with a target")
        return calibration.serve(target_recall=target_recall, max_ms=max_ms, max_cost=max_cost)

    def _split_search(self, queries: np.ndarray, k: int, dearer: str, cheaper: str, share: float,
                      target: str) -> SearchResult:
        """A batch under a mixed recall target: the first `share` of the queries with the dearer plan, the
        rest with the cheaper one, as one result (its plan says both, its cost adds them up)."""
        cut = int(round(share * len(queries)))
        parts = [self.search(part, k=k, plan=plan) for part, plan in ((queries[:cut], dearer),
                                                                      (queries[cut:], cheaper)) if len(part)]
        result = SearchResult(np.vstack([r.ids for r in parts]), np.vstack([r.scores for r in parts]),
                              f"{dearer} for {cut} queries, {cheaper} for {len(queries) - cut}",
                              Cost.added([r.cost for r in parts]), target=target)
        return result

    def _damaged(self, what: str) -> CollectionError:
        """The error for a search that damaged files broke, naming the files (the store is verified now)."""
        files = [f"{path}: {problem}" for path, problem in self._store.verify()]
        return CollectionError(f"search of collection {self.path} {what}: "
                               + ("; ".join(files) if files else "run `matsearch check` to find the damaged file"))

    def _plan(self, plan) -> Plan:
        """The plan to run, parsed and checked once per distinct string."""
        key = plan if isinstance(plan, (str, type(None))) else None
        cached = self._plans.get(key) if key is not None or plan is None else None
        if cached is None:
            cached = as_plan(plan, self._store.dim)
            if key is not None or plan is None:
                self._plans[key] = cached
        return cached

    def _missing_index(self, plan: Plan, via: str) -> Exception:
        if via in self._broken:
            return CollectionError(f"plan {plan} needs {INDEX_KINDS[via]}, which is unusable: {self._broken[via]}; "
                                   f"exact plans still work, and `matsearch build {self.path} --recipe "
                                   f"{self.manifest.recipe}` rebuilds it")
        return InvalidInputError(
            f"plan {plan} needs {INDEX_KINDS[via]}, but collection {self.path} has recipe "
            f"{self.manifest.recipe!r}; build one first (matsearch build)"
        )

    def _encoded(self, queries):
        """Text queries (a text or a list of texts) as their vectors; anything else as given."""
        if isinstance(queries, str):
            queries = [queries]
        if isinstance(queries, (list, tuple)) and not queries:
            raise InvalidInputError("no queries given")
        if isinstance(queries, (list, tuple)) and isinstance(queries[0], str):
            empty = [n for n, q in enumerate(queries) if not isinstance(q, str) or not q.strip()]
            if empty:
                raise InvalidInputError(f"query {empty[0]} is empty: {queries[empty[0]]!r}")
            queries = self.encoder.encode(list(queries))
        return queries

    def __len__(self) -> int:
        self._sync()
        return 0 if self._store is None else self._store.count - self._n_dead

    @property
    def dim(self) -> int | None:
        return self.manifest.dim

    @property
    def transform(self) -> Transform | None:
        """The fitted map from raw vectors to stored ones (None before the first add)."""
        self._sync()
        return self._transform

    def info(self, plan: Plan | str | None = None) -> dict:
        """Counts, dims and bytes per vector: on disk (all files, and the memory-mapped vector store
        that re-ranking reads), held in RAM by each index, and resident for `plan`'s first stage;
        and any index that is unusable, with the reason."""
        self._sync()
        with self._rw.reading():
            return self._info(plan)

    def _info(self, plan) -> dict:
        m = self.manifest
        stored = 0 if self._store is None else self._store.count
        count = stored - self._n_dead
        disk = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        info = {
            "path": str(self.path), "count": count, "stored_rows": stored, "deleted": stored - count,
            "deleted_share": (stored - count) / stored if stored else 0.0,
            "dim": m.dim, "nesting": m.nesting, "metric": m.metric, "transform": m.transform, "model": m.model,
            "on_disk_bytes": disk, "on_disk_bytes_per_vector": disk / stored if stored else 0.0,
        }
        info["store_bytes_per_vector"] = (sum(p.stat().st_size for p in (self.path / "vectors").glob("*"))
                                          / stored if stored else 0.0)
        info["store_reads"] = "direct I/O" if self._store is not None and self._store.direct else "memory map"
        info["recipe"] = m.recipe
        per_index = {str(part): self._indexes[part.kind].resident_bytes() / max(stored, 1)
                     for part in Recipe.parse(m.recipe).parts if part.kind in self._indexes}
        info["index_bytes_per_vector"] = sum(per_index.values())
        info["in_memory_bytes_per_vector"] = per_index
        info["unusable_indexes"] = {INDEX_KINDS[kind]: reason for kind, reason in self._broken.items()}
        try:
            calibration = self.calibration()
        except CollectionError as exc:
            calibration, info["calibration"] = None, {"unreadable": str(exc)}
        if calibration is not None or "calibration" not in info:
            info["calibration"] = None if calibration is None else {
                "created": calibration.created, "queries": calibration.queries, "rows": calibration.rows,
                "points": len(calibration.points), "default_target_recall": DEFAULT_TARGET,
                "drift_floor": calibration.top1_floor,
                "stale": calibration.stale(rows=count, recipe=m.recipe, indexes=m.indexes, epoch=m.epoch)}
        if m.dim is not None:
            plan = as_plan(plan, m.dim)
            info["plan"] = str(plan)
            via = plan.stages[0].index
            if via is None:
                scanned = 4 * plan.stages[0].dim + (4 if m.metric != "ip" else 0)  # cosine, l2: the prefix norm
            else:
                scanned = self._indexes[via].resident_bytes() / max(stored, 1) if via in self._indexes else 0.0
            info["resident_bytes_per_vector"] = scanned
        return info

    def _answered(self, run) -> SearchResult:
        """`run()`'s result (a search over rows, under the read lock) with ids for its rows; a failure or a
        score that is not finite is reported as damage to the collection's files."""
        try:
            result = run()
        except (ArithmeticError, LookupError, ValueError) as exc:
            if isinstance(exc, MatsearchError):
                raise
            raise self._damaged(f"failed ({type(exc).__name__}: {exc})") from exc
        result.ids = self._ids.lookup(result.ids)
        if not _kernels.all_finite(result.scores):
            raise self._damaged(f"scored a query as {result.scores.min()}")
        return result

    def _ready(self, plan) -> tuple[BlockStore, Plan, object]:
        """Under the read lock: the store to search, `plan` parsed and checked, and the index its first stage
        asks for (None for a scan); raises if the collection is empty or that index is missing or unusable."""
        store, plan = self._searchable(), self._plan(plan)
        via = plan.stages[0].index
        if via is not None and via not in self._indexes:
            raise self._missing_index(plan, via)
        return store, plan, self._indexes.get(via)

    def _searchable(self) -> BlockStore:
        if self._store is None or self._store.count == self._n_dead:
            raise InvalidInputError(f"collection {self.path} is empty: nothing to search")
        return self._store

    def _require_writable(self) -> None:
        if not self.writable:
            raise CollectionError(f"collection {self.path} is open read-only")

    def _save_grown_indexes(self) -> None:
        """Rewrite the index files that rows added since they were written have grown, so a
        reopened collection holds the very same indexes (an HNSW graph re-extended on open
        would draw new random levels for those rows)."""
        folder = self.path / self.manifest.indexes
        for part in Recipe.parse(self.manifest.recipe).parts:
            index = self._indexes.get(part.kind)
            if index is not None and index.indexed_ > self._saved_rows.get(part.kind, 0):
                index.save(folder / f"{part.file}.tmp")
                os.replace(folder / f"{part.file}.tmp", folder / part.file)
                self._saved_rows[part.kind] = index.indexed_

    def close(self) -> None:
        if self.writable and self._docs is not None and self._indexes:
            self._save_grown_indexes()
        if self.writable and self._docs is not None and self._store is not None:
            self._lexical.save_on_close(self._docs, self._store.count, self.manifest.epoch)
        if self._docs is not None:
            self._docs.close()
            self._docs = None
        if self._counter is not None:
            self._counter.close()
            self._counter = None
        if self._release is not None:
            self._release()

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MemoryIds:
    """Row → id held in memory: a reader's stand-in when no writer has written the id table yet."""

    def __init__(self, ids_by_row: list[str]):
        self._ids = np.array(ids_by_row, dtype=object)

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        return self._ids[rows]


def _next_index_folder(path: Path) -> str:
    taken = [int(p.name.split(".")[1]) for p in path.glob("indexes.*") if p.name.split(".")[1].isdigit()]
    return f"indexes.{max(taken, default=0) + 1}"


def _remove_stale_index_folders(path: Path, current: str) -> None:
    """Index folders the manifest does not name: a build that crashed, or one another build replaced."""
    for folder in path.glob("indexes*"):
        if folder.is_dir() and folder.name != current:
            shutil.rmtree(folder, ignore_errors=True)


def _check_ids(ids) -> list[str]:
    if ids is None:
        raise InvalidInputError("no ids given")
    if isinstance(ids, (str, int, np.integer)):
        ids = [ids]
    ids = [str(i) if isinstance(i, (int, np.integer)) and not isinstance(i, bool) else i for i in ids]
    if not ids:
        raise InvalidInputError("no ids given")
    for i in ids:
        if not isinstance(i, str) or not i:
            raise InvalidInputError(f"ids must be non-empty strings, got {i!r}")
    if len(set(ids)) != len(ids):
        seen, dupes = set(), []
        for i in ids:
            if i in seen:
                dupes.append(i)
            seen.add(i)
        raise InvalidInputError(f"duplicate ids in one call: {dupes[:5]}")
    return ids


def _column(values, n: int, name: str) -> list | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes, dict)):
        raise InvalidInputError(f"{name} must be a list with one entry per id, got a {type(values).__name__}")
    values = list(values)
    if len(values) != n:
        raise InvalidInputError(f"got {len(values)} {name} for {n} ids")
    return values


def _check_texts(texts, n: int) -> list | None:
    texts = _column(texts, n, "texts")
    for i, text in enumerate(texts or []):
        if text is not None and not isinstance(text, str):
            raise InvalidInputError(f"texts[{i}] must be a string or None, got {type(text).__name__}")
    return texts


def _metadata_json(metadata, n: int) -> list[str | None]:
    """Each item's metadata (a dict or None) as JSON text, or an error naming the item."""
    metadata = _column(metadata, n, "metadata")
    if metadata is None:
        return [None] * n
    encoded = []
    for i, item in enumerate(metadata):
        if item is not None and not isinstance(item, dict):
            raise InvalidInputError(f"metadata[{i}] must be a dict or None, got {type(item).__name__}")
        try:
            encoded.append(None if item is None else json.dumps(item))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"metadata[{i}] is not JSON-serialisable: {exc}") from None
    return encoded
