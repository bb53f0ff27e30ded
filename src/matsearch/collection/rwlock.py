"""A readers–writer lock: any number of searches at once, or one change to the in-memory state."""

from __future__ import annotations

import threading
from contextlib import contextmanager


class ReadWriteLock:
    """Shared for searches, exclusive for refreshes and writes; a waiting writer holds off new readers."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._owner: int | None = None

    @contextmanager
    def reading(self):
        me = threading.get_ident()
        if self._owner == me:  # a writer may read what it holds
            yield
            return
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self):
        me = threading.get_ident()
        if self._owner == me:  # re-entrant for the holder
            yield
            return
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing, self._owner = True, me
        try:
            yield
        finally:
            with self._cond:
                self._writing, self._owner = False, None
                self._cond.notify_all()
