"""SIGKILL a writer at random points of add, delete, build and compact: every acknowledged write survives."""

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
