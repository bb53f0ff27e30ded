"""A readers–writer lock: any number of searches at once, or one change to the in-memory state."""

from __future__ import annotations

import threading


class ReadWriteLock:
    """Shared for searches (`with lock.reading():`), exclusive for refreshes and writes
    (`with lock.writing():`); a waiting writer holds off new readers. The writer may read
    and write again while it holds the lock."""

    def __init__(self):
        self._mutex = threading.Lock()  # taken directly on the readers' fast path (a Condition's `with` is Python code)
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writing = 0
        self._writers_waiting = 0
        self._owner: int | None = None
        self._shared, self._exclusive = _Shared(self), _Exclusive(self)

    def reading(self) -> "_Shared":
        return self._shared

    def writing(self) -> "_Exclusive":
        return self._exclusive


class _Shared:
    """The reading side, as a plain context manager (a generator-based one costs microseconds per search)."""

    def __init__(self, lock: ReadWriteLock):
        self.lock = lock

    def __enter__(self):
        lock = self.lock
        if lock._owner == threading.get_ident():
            lock._writing += 1  # nested inside this thread's write: count it as a write
            return self
        with lock._mutex:
            while lock._writing or lock._writers_waiting:
                lock._cond.wait()
            lock._readers += 1
        return self

    def __exit__(self, *exc):
        lock = self.lock
        if lock._owner == threading.get_ident():
            lock._writing -= 1
            return
        with lock._mutex:
            lock._readers -= 1
            if not lock._readers and lock._writers_waiting:  # only a writer waits for the readers to leave
                lock._cond.notify_all()


class _Exclusive:
    def __init__(self, lock: ReadWriteLock):
        self.lock = lock

    def __enter__(self):
        lock, me = self.lock, threading.get_ident()
        if lock._owner == me:
            lock._writing += 1
            return self
        with lock._cond:
            lock._writers_waiting += 1
            while lock._writing or lock._readers:
                lock._cond.wait()
            lock._writers_waiting -= 1
            lock._writing, lock._owner = 1, me
        return self

    def __exit__(self, *exc):
        lock = self.lock
        with lock._cond:
            lock._writing -= 1
            if not lock._writing:
                lock._owner = None
                lock._cond.notify_all()
