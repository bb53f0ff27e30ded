"""A writer that adds, deletes, builds and compacts until it is killed, logging each call after it returns (for test_crash).

    python crash_worker.py COLLECTION VECTORS.npy LOG FIRST_ID SEED [mixed|upsert]

`upsert` instead replaces random items among base0…base999 with new versions (vector VECTORS[pick], text
"pick <pick>", metadata {"pick": pick}), logging each call's picks before it starts and after it returns,
and compacts now and then.
"""

import json
import os
import sys

import numpy as np

from matsearch import Collection


def main(path, vectors, log, first_id, seed, mode="mixed"):
    rng = np.random.default_rng(seed)
    with Collection.open(path, writable=True) as col, open(log, "a") as out:
        def ack(op, ids, **extra):
            out.write(json.dumps({"op": op, "ids": ids, **extra}) + "\n")
            out.flush()
            os.fsync(out.fileno())

        if mode == "upsert":
            return upserts(col, vectors, ack, rng)

        live = []  # only ids this process added are deleted, so each delete's ids are known to exist
        next_id = first_id
        for step in range(10_000):
            ids = [str(next_id + n) for n in range(40)]
            picks = rng.integers(0, len(vectors), len(ids))
            col.add(ids, vectors=vectors[picks] + 0.01 * rng.normal(size=(len(ids), vectors.shape[1])).astype(np.float32))
            ack("add", ids)
            next_id += len(ids)
            live += ids
            gone = [live.pop(int(rng.integers(len(live)))) for _ in range(15)]
            ack("deleting", gone)  # these may be gone even if the delete is never acknowledged
            col.delete(gone)
            ack("delete", gone)
            if step % 3 == 2:
                col.build("ivf16@d32:d64,bin32/sign")
                ack("build", [])
            if step % 2 == 1:
                col.compact()
                ack("compact", [])


def upserts(col, vectors, ack, rng):
    ack("ready", [])
    for step in range(100_000):
        ids = [f"base{i}" for i in rng.choice(1000, 30, replace=False)]
        picks = [int(p) for p in rng.integers(0, len(vectors), len(ids))]
        ack("upserting", ids, picks=picks)  # from here until "upsert", either version may be the one kept
        col.upsert(ids, vectors=vectors[picks], texts=[f"pick {p}" for p in picks],
                   metadata=[{"pick": p} for p in picks])
        ack("upsert", ids, picks=picks)
        if step % 10 == 9:
            col.compact()
            ack("compact", [])


if __name__ == "__main__":
    path, array, log, first_id, seed, *mode = sys.argv[1:]
    main(path, np.load(array).astype(np.float32), log, int(first_id), int(seed), *mode)
