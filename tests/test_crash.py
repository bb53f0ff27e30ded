"""SIGKILL a writer at random points of add, delete, build, compact and upsert: every acknowledged write survives."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_ranking

from matsearch import Collection, InvalidInputError

WORKER = Path(__file__).with_name("crash_worker.py")
TRIALS = 20


def test_sigkill_during_add_delete_and_build(scifact, tmp_path):
    _, docs, queries = scifact
    path, log = tmp_path / "col", tmp_path / "acks.jsonl"
    with Collection.create(path, nesting=[32, 64, 128, 384]) as col:
        col.add([f"base{i}" for i in range(1000)], vectors=docs[:1000])
        col.build("ivf16@d32:d64,bin32/sign")
    np.save(tmp_path / "vectors.npy", docs[1000:3000])
    rng = np.random.default_rng(0)
    added, deleted, maybe_deleted, done = set(), set(), set(), {"build": 0, "compact": 0}
    for trial in range(TRIALS):
        worker = subprocess.Popen([sys.executable, WORKER, path, tmp_path / "vectors.npy", log,
                                   str(1_000_000 * (trial + 1)), str(trial)])
        time.sleep(1.5 + rng.uniform(0, 3.0))  # past the import, into the writes
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        for line in log.read_text().splitlines():
            ack = json.loads(line)
            if ack["op"] == "add":
                added.update(ack["ids"])
            elif ack["op"] == "deleting":
                maybe_deleted.update(ack["ids"])
            elif ack["op"] == "delete":
                deleted.update(ack["ids"])
            else:
                done[ack["op"]] += 1
        log.write_text("")
        Collection.open(path, writable=True).close()  # the next writer finishes or discards what was cut short
        with Collection.open(path) as col:  # every acknowledged write is there, no deleted id returns
            col.get(sorted(added - maybe_deleted))  # raises naming any acknowledged id that is missing
            for gone in sorted(deleted)[:: max(1, len(deleted) // 20)]:
                with pytest.raises(InvalidInputError, match="ids not in the collection"):
                    col.get([gone])
            live = len(col)  # a write that committed but was killed before its acknowledgement may be there too
            acknowledged = 1000 + len(added) - len(deleted)  # bounds allow one unacknowledged add/delete a trial
            assert acknowledged - 15 * (trial + 1) <= live <= acknowledged + 40 * (trial + 1)
            exact = col.search(queries[:10], k=10)
            everything = col.search(queries[:10], k=10, plan="p16@d64:100000>d384")
            assert_same_ranking(everything.ids, everything.scores, exact.ids, exact.scores)
            returned = set(col.search(docs[1000:1100], k=20).ids.ravel())
            assert not returned & deleted
    assert len(added) and len(deleted) and done["build"] and done["compact"], (len(added), len(deleted), done)


def test_sigkill_during_upsert_leaves_the_old_or_the_new_version(scifact, tmp_path):
    """Each trial kills a writer that upserts 30 items a call (and compacts now and then) at a random moment:
    every item then holds exactly one version — the one acknowledged, or the one its last call was writing —
    with vector, text and metadata of that same version, and a cut call is kept whole or not at all."""
    from matsearch.matryoshka import normalize

    _, docs, queries = scifact
    path, log, vectors = tmp_path / "col", tmp_path / "acks.jsonl", docs[:3000]
    np.save(tmp_path / "vectors.npy", vectors)
    ids = [f"base{i}" for i in range(1000)]
    with Collection.create(path, model=None, nesting=[32, 64, 128, 384]) as col:
        col.add(ids, vectors=vectors[:1000], texts=[f"pick {i}" for i in range(1000)],
                metadata=[{"pick": i} for i in range(1000)])
        col.build("ivf16@d32:d64")
    current = dict(zip(ids, range(1000)))  # id → the pick of its acknowledged version
    rng = np.random.default_rng(1)
    cut = 0
    for trial in range(TRIALS):
        log.write_text("")
        worker = subprocess.Popen([sys.executable, WORKER, path, tmp_path / "vectors.npy", log, "0", str(trial),
                                   "upsert"])
        deadline = time.monotonic() + 30
        while '"ready"' not in log.read_text() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.poll() is None, f"trial {trial}: the worker exited before it was killed"
        time.sleep(rng.uniform(0.05, 0.5))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        pending = {}
        for line in log.read_text().splitlines():
            ack = json.loads(line)
            if ack["op"] == "upserting":
                pending = dict(zip(ack["ids"], ack["picks"]))
            elif ack["op"] == "upsert":
                current.update(pending)
                pending = {}
        Collection.open(path, writable=True).close()  # the next writer discards an upsert that never committed
        with Collection.open(path) as col:
            assert len(col) == 1000, f"trial {trial}: {len(col)} live items"
            records = col.get(ids)  # raises naming any id left with no version
            picks = [r.metadata["pick"] for r in records]
            assert [r.text for r in records] == [f"pick {p}" for p in picks]
            np.testing.assert_allclose(np.stack([r.vector for r in records]),
                                       col.transform.apply(normalize(vectors[picks])), atol=1e-4)
            found = dict(zip(ids, picks))
            wrong = [i for i in ids if found[i] != current[i] and found[i] != pending.get(i)]
            assert not wrong, f"trial {trial}: {wrong[:5]} hold neither their old nor their new version"
            changed = [i for i, p in pending.items() if p != current[i]]
            assert len({found[i] == pending[i] for i in changed}) <= 1, f"trial {trial}: an upsert was half kept"
            cut += bool(changed)
            current.update(found)
            everything = col.search(queries[:3], k=1000)  # every item, each once
            assert all(sorted(row) == sorted(ids) for row in everything.ids.tolist())
            exact = col.search(queries[:10], k=10)
            probed = col.search(queries[:10], k=10, plan="p16@d64:100000>d384")
            assert_same_ranking(probed.ids, probed.scores, exact.ids, exact.scores)
    assert cut >= TRIALS // 4, f"only {cut} of {TRIALS} kills cut an upsert short"
