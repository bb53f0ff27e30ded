"""A collection split into shards by id hash, each an ordinary collection served by Ray actors (see layout.py).

The driver — this object — owns the shared parts: it fits the transform on the first add, trains the
recipe's indexes on a sample drawn from every shard (trained.py), routes each write to the shard its ids hash
to, and merges searches. Every shard applies the same transform and probes the same lists, so their scores
compare and the merged top-k of an exhaustive plan is exactly a single collection's. A search is one call per
shard however many queries it holds: batch queries, each call costs about a millisecond of Ray's time
(`ShardedResult.overhead_seconds` says how much).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import ray

from ..collection import Record
from ..collection.collection import _check_ids, _column  # the checks a plain collection makes of its arguments
from ..collection.lock import WriterLock
from ..encoder import DEFAULT_MODEL, UsesModel, model_dimension
from ..errors import CollectionError, InvalidInputError
from ..matryoshka import check_nesting, check_vectors, default_nesting, normalize
from ..recipe import Recipe
from ..search import check_k
from ..transform import Transform
from . import trained as training
from .cluster import connect
from .layout import MANIFEST, TRANSFORM, ShardedManifest, positive
from .merge import ShardedResult, merge
from .pool import ShardPool, ShardUnavailableError
from .routing import shard_of, split

_SEARCH_OPTIONS = ("plan", "target_recall", "max_ms", "max_cost", "filter")
_INLINE_BYTES = 100_000  # queries up to this size go in each shard's call, as Ray inlines small arguments


def is_sharded(path) -> bool:
    """Whether `path` holds a sharded collection."""
    return (Path(path) / MANIFEST).is_file()


class ShardedCollection(UsesModel):
    """Open with `ShardedCollection.create` or `.open`; close (or use `with`) when done. The methods are
    `Collection`'s: add, upsert, delete, update_metadata, get, search, build, tune, compact, info, len."""

    def __init__(self, path: Path, manifest: ShardedManifest, *, writable: bool, replicas: int | None = None):
        self.path, self.manifest, self.writable = Path(path), manifest, writable
        self.replicas = manifest.replicas if replicas is None else replicas
        self._encoder, self._pool = None, None
        self._lock = WriterLock(self.path / ".lock").acquire() if writable else None
        try:
            connect("auto")
            if manifest.dim is not None:
                self._start(new=False)
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, path, *, shards: int, replicas: int = 1, model: str | None = DEFAULT_MODEL,
               metric: str = "cosine", transform: str = "pca", nesting: list[int] | None = None,
               on_disk: bool = False) -> "ShardedCollection":
        """A new, empty sharded collection of `shards` shards, each served by `replicas` actors; the other
        settings are `Collection.create`'s, shared by every shard. Connects to Ray ("auto": see `connect`)."""
        path = Path(path)
        if (path / MANIFEST).exists() or (path / "manifest.json").exists():
            raise CollectionError(f"a collection already exists at {path}")
        manifest = ShardedManifest(shards=shards, replicas=replicas, model=model, metric=metric, transform=transform,
                                   nesting=None if nesting is None else list(nesting), on_disk=on_disk).check()
        path.mkdir(parents=True, exist_ok=True)
        manifest.save(path / MANIFEST)
        return cls(path, manifest, writable=True)

    @classmethod
    def open(cls, path, *, writable: bool = False, replicas: int | None = None) -> "ShardedCollection":
        """Open a sharded collection (one writer at a time); `replicas`: actors per shard this time."""
        if replicas is not None:
            positive("replicas", replicas)
        return cls(Path(path), ShardedManifest.load(Path(path) / MANIFEST), writable=writable, replicas=replicas)

    @property
    def shards(self) -> int:
        return self.manifest.shards

    @property
    def dim(self) -> int | None:
        return self.manifest.dim

    @property
    def transform(self) -> Transform | None:
        m = self.manifest
        return None if m.dim is None else Transform.load(self.path / TRANSFORM, kind=m.transform, dim=m.dim)

    def shard_of(self, ids) -> list[int]:
        """The shard each id is routed to."""
        return shard_of(_check_ids(ids), self.shards).tolist()

    def actor(self, shard: int, replica: int = 0):
        """The Ray actor serving one replica of one shard (replica 0 writes)."""
        if not self._serving():
            raise InvalidInputError(f"collection {self.path} is empty: no shard is served yet")
        if not (0 <= shard < self.shards and 0 <= replica < self.replicas):
            raise InvalidInputError(f"shard {shard}, replica {replica} is out of range: {self.shards} shards of "
                                    f"{self.replicas} replicas")
        return self._pool.actor(shard, replica)

    def _start(self, *, new: bool) -> None:
        """Start the shards' actors; a writer gives them what makes a shard (the shared transform's file), `new`:
        the shards are made now (the first add), so none is there yet."""
        m = self.manifest
        create = None
        if self.writable:
            create = {"model": m.model, "metric": m.metric, "nesting": m.nesting, "on_disk": m.on_disk,
                      "transform": (str(self.path / TRANSFORM), m.transform, m.dim), "new": new}
        self._pool = ShardPool(self.path, m.shards, self.replicas, writable=self.writable, create=create)
        self._pool.ready()

    def _serving(self) -> bool:
        """Whether the shards are served. A reader opened before the first add reads the manifest again and
        starts them once the writer has made them."""
        if self._pool is None and not self.writable:
            manifest = ShardedManifest.load(self.path / MANIFEST)
            if manifest.dim is not None:
                self.manifest = manifest
                try:
                    self._start(new=False)
                except BaseException:  # the shards are being made: none served, the next call tries again
                    self._pool, pool = None, self._pool
                    if pool is not None:
                        pool.close()
                    raise
        return self._pool is not None

    # -- writing -------------------------------------------------------------

    def add(self, ids, *, texts=None, vectors=None, metadata=None, upsert: bool = False,
            progress: bool = False) -> int:
        """Add items (their vectors, or texts the driver embeds), each to the shard its id hashes to. Each
        shard's part is committed whole or not at all; ids already there are refused before anything is
        written, unless `upsert`. The first add fits the shared transform (as `Collection.add` does)."""
        self._require_writable()
        ids = _check_ids(ids)
        texts, metadata = _column(texts, len(ids), "texts"), _column(metadata, len(ids), "metadata")
        vectors = self.vectors_for(len(ids), texts, vectors, progress=progress)
        if self._pool is None:
            self.fit_transform(vectors)
        if not upsert:
            taken = self.existing(ids)
            if taken:
                raise InvalidInputError(f"ids already in the collection: {taken[:5]}; an upsert replaces them "
                                        "(add(..., upsert=True), ShardedCollection.upsert)")
        return self.committed(self.submit_add(ids, vectors, texts, metadata, upsert))

    def submit_add(self, ids: list[str], vectors: np.ndarray, texts, metadata, upsert: bool):
        """Start each shard's part of an add of checked items and return at once (ingest.py keeps the shards
        writing while it reads on); `committed` waits for the shards' commits."""
        calls = {s: ("add", [ids[i] for i in rows], vectors[rows], _pick(texts, rows), _pick(metadata, rows), upsert)
                 for s, rows in split(ids, self.shards).items()}
        return self._pool.submit(calls, writers=True)

    def committed(self, pending) -> int:
        """Wait for the adds `submit_add` started: the items the shards committed."""
        return sum(self._pool.collect(pending).values())

    def upsert(self, ids, *, texts=None, vectors=None, metadata=None, progress: bool = False) -> int:
        """Add items, replacing whole any whose id is already in the collection: `add(..., upsert=True)`."""
        return self.add(ids, texts=texts, vectors=vectors, metadata=metadata, upsert=True, progress=progress)

    def fit_transform(self, vectors: np.ndarray, *, progress: bool = False) -> Transform:
        """Fit the shared transform on `vectors` (raw: a sample of what will be added), save it and start the
        shards: the first add does, on its vectors (ingest.py: on its first batch)."""
        m, dim = self.manifest, vectors.shape[1]
        if m.dim is not None:
            raise InvalidInputError(f"collection {self.path} already has its transform")
        width = None if m.model is None else model_dimension(m.model)
        if width is not None and width != dim:
            raise InvalidInputError(f"the vectors are {dim} wide but the collection's model {m.model!r} embeds "
                                    f"{width} dims; give {width}-dim vectors, or create the collection with the "
                                    "model that made them (or model=None)")
        if m.transform == "pca" and len(vectors) < dim:
            raise InvalidInputError(f"the PCA transform is fitted on the first add, which needs at least {dim} "
                                    f"vectors (got {len(vectors)}); add more at once, or create the collection "
                                    "with transform='none'")
        nesting = check_nesting(m.nesting or default_nesting(dim), dim)
        fitted = Transform(kind=m.transform).fit(normalize(vectors) if m.metric == "cosine" else vectors,
                                                 nesting=nesting, progress=progress)
        fitted.save(self.path / TRANSFORM)
        m.transform, m.dim, m.nesting = fitted.fitted_kind, vectors.shape[1], nesting
        m.save(self.path / MANIFEST)
        self._start(new=True)
        return fitted

    def delete(self, ids) -> int:
        """Remove items by id from their shards; an id not in the collection is an error and nothing is deleted."""
        self._require_writable()
        ids = self._all_there(_check_ids(ids))
        calls = {s: ("delete", [ids[i] for i in rows]) for s, rows in split(ids, self.shards).items()}
        return sum(self._pool.gather(calls, writers=True).values())

    def update_metadata(self, ids, metadata, *, merge: bool = False) -> int:
        """`Collection.update_metadata` on each id's shard; an id not in the collection is an error and nothing
        is written."""
        self._require_writable()
        ids = self._all_there(_check_ids(ids))
        metadata = [metadata] * len(ids) if isinstance(metadata, dict) or metadata is None else \
            _column(metadata, len(ids), "metadata")
        calls = {s: ("update_metadata", [ids[i] for i in rows], _pick(metadata, rows), merge)
                 for s, rows in split(ids, self.shards).items()}
        return sum(self._pool.gather(calls, writers=True).values())

    def _all_there(self, ids: list[str]) -> list[str]:
        there = set(self.existing(ids))
        missing = [i for i in ids if i not in there]
        if missing:
            raise InvalidInputError(f"ids not in the collection: {missing[:5]}")
        return ids

    def build(self, recipe: "Recipe | str", *, sample: int = training.SAMPLE, seed: int = 0,
              progress: bool = False) -> Recipe:
        """Train the recipe's indexes once, on `sample` stored vectors drawn from every shard in proportion to
        its size, then build every shard's indexes from those trained parts, the shards in parallel."""
        self._require_writable()
        m = self.manifest
        if self._pool is None:
            raise InvalidInputError(f"collection {self.path} is empty: nothing to build indexes over")
        recipe = (Recipe.parse(recipe) if isinstance(recipe, str) else recipe).check(m.dim, m.nesting)
        counts = self._pool.gather({s: "ping" for s in range(self.shards)}, writers=True)
        total = sum(counts.values())
        if not total:
            raise InvalidInputError(f"collection {self.path} is empty: nothing to build indexes over")
        share = {s: math.ceil(sample * n / total) for s, n in counts.items() if n}
        drawn = self._pool.gather({s: ("sample", n, seed + s) for s, n in share.items()})
        old = m.trained
        name = f"trained.{int(old.split('.')[1]) + 1 if old else 1}"
        shutil.rmtree(self.path / name, ignore_errors=True)  # left by a build that failed: the manifest never named it
        folder = training.train(self.path / name, np.vstack([drawn[s] for s in sorted(drawn)]), recipe, m.nesting,
                                m.metric, progress=progress)
        self._pool.gather({s: ("build", str(recipe), str(folder)) for s in range(self.shards)}, writers=True)
        m.recipe, m.trained = str(recipe), name
        m.save(self.path / MANIFEST)
        if old is not None:
            shutil.rmtree(self.path / old, ignore_errors=True)
        return recipe

    def tune(self, **options) -> dict:
        """Calibrate every shard (`Collection.tune`'s options), in parallel: {shard: its Calibration}. A target
        then picks each shard's plan from its own frontier."""
        self._require_writable()
        if self._pool is None:
            raise InvalidInputError(f"collection {self.path} is empty: nothing to calibrate")
        return self._pool.gather({s: ("tune", options) for s in range(self.shards)}, writers=True)

    def compact(self) -> dict:
        """Compact every shard, in parallel: the rows removed and kept in all, and the seconds it took."""
        self._require_writable()
        start = time.perf_counter()
        done = [] if self._pool is None else \
            self._pool.gather({s: "compact" for s in range(self.shards)}, writers=True).values()
        return {"removed": sum(d["removed"] for d in done), "count": sum(d["count"] for d in done),
                "seconds": time.perf_counter() - start}

    # -- reading -------------------------------------------------------------

    def existing(self, ids) -> list[str]:
        """The ids among `ids` that the collection holds."""
        ids = _check_ids(ids)
        if not self._serving():
            return []
        found = self._pool.gather({s: ("existing", [ids[i] for i in rows])
                                   for s, rows in split(ids, self.shards).items()})
        there = {i for part in found.values() for i in part}
        return [i for i in ids if i in there]

    def get(self, ids) -> list[Record]:
        """Stored records for `ids`, in the order asked (vectors as stored: after the shared transform)."""
        ids = _check_ids(ids)
        if not self._serving():
            raise InvalidInputError(f"ids not in the collection: {ids[:5]}")
        parts = self._pool.gather({s: ("get", [ids[i] for i in rows]) for s, rows in split(ids, self.shards).items()})
        found = {r.id: r for records in parts.values() for r in records}
        return [found[i] for i in ids]

    def search(self, queries, *, k: int = 10, plan: str | None = None, target_recall: float | None = None,
               max_ms: float | None = None, max_cost: float | None = None, filter=None, mode: str | None = None,
               fusion=None, query_vectors=None, parents: bool = False, partial: bool = False,
               timeout: float | None = None) -> ShardedResult:
        """Top-k ids per query over every shard: each shard runs the same plan or target (and filter) on the
        queries — text, a list of texts (embedded here, once) or vectors, 1-D or 2-D — and the shards' top-k
        are merged. A shard none of whose replicas answers is an error naming it; with `partial=True` the
        result holds the other shards' top-k, `partial` and naming the `missing` shards. `timeout`: seconds a
        shard may take. Dense only — BM25 scores depend on each shard's own texts and do not compare across
        shards — so `fusion` and `parents` (a search by parent document) are refused; `query_vectors`: the text
        queries' vectors, already embedded."""
        if mode not in (None, "dense") or fusion is not None or parents:
            asked = f"mode {mode!r}" if mode not in (None, "dense") else "fusion" if fusion is not None else "parents"
            raise InvalidInputError(f"a sharded collection searches in mode 'dense' only, not {asked}: lexical "
                                    "scores (BM25) depend on each shard's own texts and do not compare across shards")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k={k!r} is out of range: give a positive whole number")
        if not self._serving():
            raise InvalidInputError(f"collection {self.path} is empty: nothing to search")
        if isinstance(queries, str) or (isinstance(queries, (list, tuple)) and queries and isinstance(queries[0], str)):
            queries = query_vectors if query_vectors is not None else \
                self.encoder.encode([queries] if isinstance(queries, str) else list(queries))
        raw = check_vectors(queries, self.manifest.dim, what="queries")
        start = time.perf_counter()  # the search's wall time, as a collection's: embedding the queries is not in it
        given = dict(zip(_SEARCH_OPTIONS, (plan, target_recall, max_ms, max_cost, filter)))
        options = {name: value for name, value in given.items() if value is not None}
        # a big batch is put in Ray's object store once and read by every shard; a small one travels in each call,
        # which costs less than the put (one query over 2 shards: 2.0-2.6 ms a search against 4.1-4.4 with a put)
        shared = ray.put(raw) if self.shards > 1 and raw.nbytes > _INLINE_BYTES else raw
        answers = self._pool.gather({s: ("search", shared, int(k), options) for s in range(self.shards)},
                                    partial=partial, timeout=timeout)
        missing = tuple(s for s in range(self.shards) if s not in answers)
        if not any(a is not None for a in answers.values()):  # nothing to merge: say why
            if missing:
                raise ShardUnavailableError(f"shards {list(missing)} of {self.path} did not answer and the others "
                                            "hold no items: there is no partial result to give", list(missing))
            raise InvalidInputError(f"collection {self.path} is empty: nothing to search")
        result = merge(answers, int(k), len(raw), self.shards, time.perf_counter() - start, missing)
        if filter is None and not missing and result.ids.shape[1] < k:
            check_k(k, result.ids.shape[1])  # fewer items than k in all: the error a collection gives
        return result

    def __len__(self) -> int:
        if not self._serving():
            return 0
        return sum(self._pool.gather({s: "ping" for s in range(self.shards)}).values())

    def info(self, plan: str | None = None) -> dict:
        """The collection's settings and totals, and each shard's figures (`Collection.info` of every shard)."""
        m = self.manifest
        per_shard = [] if not self._serving() else \
            [a for _, a in sorted(self._pool.gather({s: ("info", plan) for s in range(self.shards)}).items())]
        count = sum(i["count"] for i in per_shard)
        disk = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        info = {"path": str(self.path), "shards": m.shards, "replicas": self.replicas, "count": count,
                "stored_rows": sum(i["stored_rows"] for i in per_shard),
                "deleted": sum(i["deleted"] for i in per_shard), "dim": m.dim, "nesting": m.nesting,
                "metric": m.metric, "transform": m.transform, "model": m.model, "recipe": m.recipe,
                "trained": m.trained, "on_disk_bytes": disk, "on_disk_bytes_per_vector": disk / count if count else 0.0}
        if per_shard:
            info["index_bytes_per_vector"] = sum(i["index_bytes_per_vector"] * i["stored_rows"]
                                                 for i in per_shard) / max(info["stored_rows"], 1)
        if plan is not None and per_shard:
            info["plan"] = per_shard[0].get("plan")
        info["per_shard"] = [{"shard": s, "count": i["count"], "deleted": i["deleted"],
                              "on_disk_bytes": i["on_disk_bytes"],
                              "index_bytes_per_vector": i["index_bytes_per_vector"],
                              **({"resident_bytes_per_vector": i["resident_bytes_per_vector"]}
                                 if "resident_bytes_per_vector" in i else {}),
                              "unusable_indexes": i["unusable_indexes"]}
                             for s, i in enumerate(per_shard)]
        return info

    def calibration(self) -> None:
        """None: each shard is calibrated on its own (`tune`), so there is no one frontier to show."""
        return None

    def _require_writable(self) -> None:
        if not self.writable:
            raise CollectionError(f"collection {self.path} is open read-only")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "ShardedCollection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pick(values: list | None, rows: np.ndarray) -> list | None:
    return None if values is None else [values[i] for i in rows]
