"""One replica of one shard: an ordinary collection in the shard's folder, served by a Ray actor.

The class is plain Python; `pool.py` makes it a Ray actor.
Replica 0 opens the shard writable — it creates the folder, with the shared transform, when the shard is
new — and the others read-only, seeing what it commits as any reader of a collection does.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from ..collection import Collection
from ..collection.manifest import Manifest
from ..errors import CollectionError
from ..results import SearchResult
from ..transform import Transform

_LOCK_WAIT = 10.0  # seconds a restarted writer waits for its dead predecessor's lock to be released


class ShardActor:
    """Serves the collection at `path`. `create`: `Collection.create` settings for the writer to make the shard
    with when it was made but never added to, or — `new` among them — is not there yet; its `transform` the shared
    one's file, kind and dim (read here: Ray keeps an actor's arguments to restart it with, so they are small)."""

    def __init__(self, path: str, *, writable: bool, create: dict | None = None):
        self.path = Path(path)
        settings = dict(create or {})
        if writable and create is not None and _unborn(self.path, settings.pop("new")):
            shutil.rmtree(self.path, ignore_errors=True)  # nothing in it: made again with the shared transform
            file, kind, dim = settings.pop("transform")
            self.col = Collection.create(self.path, transform=Transform.load(Path(file), kind=kind, dim=dim),
                                         **settings)
        else:
            self.col = _open(self.path, writable)

    def ping(self) -> int:
        return len(self.col)

    def add(self, ids: list[str], vectors: np.ndarray, texts, metadata, upsert: bool) -> int:
        return self.col.add(ids, vectors=vectors, texts=texts, metadata=metadata, upsert=upsert)

    def delete(self, ids: list[str]) -> int:
        return self.col.delete(ids)

    def update_metadata(self, ids: list[str], metadata, merge: bool) -> int:
        return self.col.update_metadata(ids, metadata, merge=merge)

    def existing(self, ids: list[str]) -> list[str]:
        return self.col.existing(ids)

    def get(self, ids: list[str]):
        return self.col.get(ids)

    def search(self, queries: np.ndarray, k: int, options: dict) -> SearchResult | None:
        """The shard's top min(k, its items) per query (None when it holds none); `options`: the plan or target
        and filter, as `Collection.search` takes them."""
        count = len(self.col)
        if not count:
            return None
        return self.col.search(queries, k=min(k, count), **options)

    def sample(self, count: int, seed: int) -> np.ndarray:
        return self.col.sample(count, seed=seed)

    def build(self, recipe: str, trained: str | None) -> str:
        return str(self.col.build(recipe, trained=None if trained is None else Path(trained)))

    def compact(self) -> dict:
        return self.col.compact()

    def tune(self, options: dict):
        return self.col.tune(**options)

    def info(self, plan: str | None) -> dict:
        return self.col.info(plan)

    def close(self) -> None:
        self.col.close()


def _unborn(path: Path, new: bool) -> bool:
    """A shard made but never added to (its own first add would fit its own transform), or — for a new
    sharded collection only — not there yet. A shard of an older one that is missing stays an error."""
    try:
        return Manifest.load(path / "manifest.json").dim is None
    except CollectionError:
        return new and not (path / "manifest.json").exists()


def _open(path: Path, writable: bool) -> Collection:
    """Open the shard; a writer waits a few seconds for the lock of a predecessor that is still dying."""
    deadline = time.monotonic() + _LOCK_WAIT
    while True:
        try:
            return Collection.open(path, writable=writable)
        except CollectionError as exc:
            if not writable or "locked by a writer" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
