"""A readers–writer lock: any number of searches at once, or one change to the in-memory state."""

from __future__ import annotations

import threading


class ReadWriteLock:
    """Shared for searches (`with lock.reading():`), exclusive for refreshes and writes
    (`with lock.writing():`); a waiting writer holds off new readers. The writer may read
    and write again while it holds the lock.

    `with lock.staging():` is a writer's slow part beside the searches — files written past what they
    see — exclusive with other writers only; its `writing()` inside then publishes the change."""

    def __init__(self):
        self._mutex = threading.Lock()  # taken directly on the readers' fast path (a Condition's `with` is Python code)
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writing = 0
        self._writers_waiting = 0
        self._owner: int | None = None
        self._slot = threading.RLock()  # one writer (staging or writing) at a time
        self._shared, self._exclusive, self._staged = _Shared(self), _Exclusive(self), _Staging(self)

    def reading(self) -> "_Shared":
        return self._shared

    def writing(self) -> "_Exclusive":
        return self._exclusive

    def staging(self) -> "_Staging":
        return self._staged


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
            while lock._writing or lock._writers_waiting:  # (no writer waits while a stager holds the slot)
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
        lock._slot.acquire()
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
            if lock._writing:
                return
            lock._owner = None
            lock._cond.notify_all()
        lock._slot.release()


class _Staging:
    def __init__(self, lock: ReadWriteLock):
        self.lock = lock

    def __enter__(self):
        self.lock._slot.acquire()
        return self

    def __exit__(self, *exc):
        self.lock._slot.release()
