"""The collection's readers–writer lock: a writer's staging goes on beside the searches, and the writer's
slow part (rows written and flushed) never holds them off."""

import threading
import time

import numpy as np

import matsearch.store as store_module
from matsearch import Collection
from matsearch.collection.rwlock import ReadWriteLock


def _in_thread(body) -> threading.Thread:
    thread = threading.Thread(target=body)
    thread.start()
    return thread


def test_staging_lets_searches_in_and_keeps_other_writers_out():
    lock, events = ReadWriteLock(), []
    staged, release = threading.Event(), threading.Event()

    def stager():
        with lock.staging():
            staged.set()
            release.wait(5)
            with lock.reading():  # a stager reads too: the other writer waits on the slot, not as a writer
                events.append("stager read")
            with lock.writing():
                events.append("stager published")

    def writer():
        with lock.writing():
            events.append("other writer")

    first = _in_thread(stager)
    staged.wait(5)
    with lock.reading():
        events.append("search during staging")
    second = _in_thread(writer)
    time.sleep(0.2)
    assert events == ["search during staging"]  # the other writer waits for the stager
    release.set()
    first.join(5), second.join(5)
    assert events == ["search during staging", "stager read", "stager published", "other writer"]
    with lock.writing(), lock.reading():  # the lock is free again, and a writer still reads inside its write
        pass


def test_an_add_flushing_its_rows_does_not_hold_off_searches(tmp_path, scifact, monkeypatch):
    vectors = scifact[1]
    col = Collection.create(tmp_path / "c", model=None)
    col.add([f"d{i}" for i in range(2000)], vectors=vectors[:2000])
    writing, release = threading.Event(), threading.Event()
    append = store_module.BlockStore.append

    def slow_append(store, rows, *, visible=True):  # an fsync that takes its time
        append(store, rows, visible=visible)
        if not visible:
            writing.set()
            release.wait(10)

    monkeypatch.setattr(store_module.BlockStore, "append", slow_append)
    adder = _in_thread(lambda: col.add([f"n{i}" for i in range(100)], vectors=vectors[2000:2100]))
    assert writing.wait(10)
    started = time.monotonic()
    found = col.search(vectors[2050], k=1, plan="d384")  # rows written but not yet committed: not seen
    assert time.monotonic() - started < 2 and found.ids[0][0] != "n50" and len(col) == 2000
    release.set()
    adder.join(10)
    assert col.search(vectors[2050], k=1, plan="d384").ids[0][0] == "n50" and len(col) == 2100
    col.close()
    with Collection.open(tmp_path / "c") as reopened:
        assert len(reopened) == 2100 and reopened.get(["n99"])[0].id == "n99"


def test_an_add_whose_commit_fails_is_never_seen_by_a_search(tmp_path, scifact):
    """The rows are shown and committed under one exclusive hold, so a failed commit is rolled back before any
    search can see them (found by review: they were shown, then the lock let go, then rolled back)."""
    vectors = scifact[1]
    col = Collection.create(tmp_path / "c", model=None)
    col.add([f"d{i}" for i in range(2000)], vectors=vectors[:2000])
    col.build("ivf16@d64:d128")
    seen = []

    def failing_insert(*args, **kwargs):
        searcher = _in_thread(lambda: seen.append(col.search(vectors[2050], k=1, plan="p16@d128:50>d384").ids[0][0]))
        searcher.join(0.3)
        assert not seen  # the search waits: the writer holds the lock across the commit and its rollback
        raise OSError("disk I/O error (simulated)")

    col._docs.insert = failing_insert
    try:
        col.add([f"n{i}" for i in range(100)], vectors=vectors[2000:2100])
    except OSError:
        pass
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen and seen[0] != "n50" and len(col) == 2000 and col._store.count == 2000
    col.close()
