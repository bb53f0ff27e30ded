"""The collections a service holds: folders under one root, by safe name, each opened once and shared.

Request threads share one open `Collection` per name (it serves many searching threads while one writes);
writes to a collection are serialised by its own lock, so a long build holds up that collection's other writes
but never a search. A collection another process holds the writer lock of is served read-only. A sharded
collection (matsearch.distributed) is served by its Ray actors, through a `ShardedCollection` with the same
methods; Ray is imported only when the root holds one.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..collection import Collection
from ..errors import CollectionError, InvalidInputError

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MANIFESTS = ("manifest.json", "sharded.json")  # a collection's, a sharded collection's (distributed/layout.py)


def _is_collection(path: Path) -> bool:
    return any((path / manifest).is_file() for manifest in MANIFESTS)


class MissingCollection(CollectionError):
    """No collection of that name under the root (HTTP 404)."""


class CollectionExists(CollectionError):
    """A collection of that name is already there (HTTP 409)."""


class _Entry:
    """One open collection, how many calls use it now, and the lock its writers take in turn."""

    def __init__(self, collection: Collection):
        self.collection = collection
        self.users = 0
        self.write_lock = threading.Lock()


class Registry:
    """Collections under `root`, opened on first use and kept open until `drop` or `close`.

    `read_only`: open every collection read-only (writes are refused by the service before they get here).
    """

    def __init__(self, root, *, read_only: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise CollectionError(f"no folder of collections at {root}")
        self.root = root.resolve()
        self.read_only = read_only
        self._cond = threading.Condition()
        self._open: dict[str, _Entry] = {}
        self._dropping: set[str] = set()
        self._opening: set[str] = set()  # names a call is opening now, outside the lock

    def path(self, name) -> Path:
        """The folder of collection `name` inside the root; an unsafe name or a link out is an error."""
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidInputError(f"collection name {name!r} is not allowed: use 1 to 64 letters, digits, "
                                    "'-' or '_'")
        path = self.root / name
        if path.is_symlink() or path.resolve().parent != self.root:
            raise InvalidInputError(f"collection name {name!r} is a link; only folders inside {self.root} are served")
        return path

    def names(self) -> list[str]:
        """Names of the collections under the root: folders (not links) with a manifest and a safe name."""
        return sorted(p.name for p in self.root.iterdir()
                      if NAME.match(p.name) and not p.is_symlink() and _is_collection(p)
                      and p.name not in self._dropping)

    def create(self, name: str, **settings) -> None:
        """Make a new collection (`Collection.create` settings); its name must be free."""
        with self._cond:
            path = self.path(name)
            if path.exists() or name in self._dropping:
                raise CollectionExists(f"collection {name!r} already exists")
            self._open[name] = _Entry(Collection.create(path, **settings))

    @contextmanager
    def reading(self, name: str) -> Iterator[Collection]:
        """The open collection `name`, for the length of a call."""
        entry = self._acquire(name)
        try:
            yield entry.collection
        finally:
            self._release(entry)

    @contextmanager
    def writing(self, name: str) -> Iterator[Collection]:
        """The open collection `name`, once this service's other writes to it are done."""
        entry = self._acquire(name)
        try:
            if not entry.collection.writable:
                raise CollectionError(f"collection {name!r} is open read-only: another process holds its writer lock")
            with entry.write_lock:
                yield entry.collection
        finally:
            self._release(entry)

    def drop(self, name: str) -> None:
        """Delete collection `name` and its folder, once the calls using it are done."""
        entry = self._acquire(name)
        try:
            if not entry.collection.writable:
                raise CollectionError(f"collection {name!r} is open read-only: another process holds its writer lock")
            with self._cond:
                if name in self._dropping:
                    raise MissingCollection(f"no collection named {name!r}")
                self._dropping.add(name)  # new calls find no such collection from here on
                self._open.pop(name, None)
        finally:
            self._release(entry)
        try:
            with self._cond:
                while entry.users:
                    self._cond.wait()
            entry.collection.close()
            shutil.rmtree(self.path(name))
        finally:
            with self._cond:
                self._dropping.discard(name)

    def close(self) -> None:
        """Close every open collection (the writer saves what it holds in memory)."""
        with self._cond:
            entries, self._open = list(self._open.values()), {}
        for entry in entries:
            entry.collection.close()

    def _acquire(self, name: str) -> _Entry:
        """The entry of collection `name`, counted as in use; opened on first use outside the registry's lock,
        so a slow first open holds up only the calls to that collection."""
        with self._cond:
            path = self.path(name)
            while (entry := self._open.get(name)) is None and name in self._opening:
                self._cond.wait()  # another call is opening it
            if entry is not None:
                entry.users += 1
                return entry
            if name in self._dropping or not _is_collection(path):
                raise MissingCollection(f"no collection named {name!r}")
            self._opening.add(name)
        try:
            collection = self._open_collection(path)
        except BaseException:
            with self._cond:
                self._opening.discard(name)
                self._cond.notify_all()
            raise
        with self._cond:  # shown and no longer opening in one step, so no other call opens it a second time
            self._opening.discard(name)
            entry = self._open[name] = _Entry(collection)
            entry.users += 1
            self._cond.notify_all()
            return entry

    def _release(self, entry: _Entry) -> None:
        with self._cond:
            entry.users -= 1
            if not entry.users:
                self._cond.notify_all()

    def _open_collection(self, path: Path) -> Collection:
        kind = Collection
        if (path / MANIFESTS[1]).is_file():
            from ..distributed import ShardedCollection

            kind = ShardedCollection
        if self.read_only:
            return kind.open(path)
        try:
            return kind.open(path, writable=True)
        except CollectionError as exc:
            if "locked by a writer" not in str(exc):
                raise
            log.info("%s: serving it read-only", exc)
            return kind.open(path)
