"""A process that writes to or searches a collection for a while, logging what it did (for test_concurrency).

    python concurrency_worker.py writer COLLECTION VECTORS.npy LOG SECONDS SEED
    python concurrency_worker.py reader COLLECTION QUERIES.npy LOG SECONDS SEED PLAN [PLAN …]

Each log line is JSON. The writer logs every commit after it returns: {"t", "op", "ids"}, with the
time the call began ("begun") for adds.
A reader logs every search: {"t0", "t1", "plan", "ids"} or {"t0", "error"}.
"""

import json
import sys
import time

import numpy as np

from matsearch import Collection


def write(path, vectors, log, seconds, seed):
    rng = np.random.default_rng(seed)
    with Collection.open(path, writable=True) as col, open(log, "w") as out:
        live = list(range(len(col)))  # the test made ids "0", "1", … and deleted none
        next_id, end = 1_000_000, time.monotonic() + seconds
        while time.monotonic() < end:
            picks = rng.integers(0, len(vectors), 20)
            new = vectors[picks] + 0.05 * rng.normal(size=(20, vectors.shape[1])).astype(np.float32)
            ids = [str(next_id + n) for n in range(20)]
            begun = time.time()
            col.add(ids, vectors=new)
            out.write(json.dumps({"begun": begun, "t": time.time(), "op": "add", "ids": ids}) + "\n")
            next_id += 20
            live += [int(i) for i in ids]
            gone = [str(live.pop(int(rng.integers(len(live))))) for _ in range(15)]
            col.delete(gone)
            out.write(json.dumps({"t": time.time(), "op": "delete", "ids": gone}) + "\n")
            out.flush()
            time.sleep(0.05)


def read(path, queries, log, seconds, seed, plans):
    rng = np.random.default_rng(seed)
    with Collection.open(path) as col, open(log, "w") as out:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            plan = plans[int(rng.integers(len(plans)))]
            query = queries[int(rng.integers(len(queries)))]
            t0 = time.time()
            try:
                ids = col.search(query, k=10, plan=plan).ids[0].tolist()
                out.write(json.dumps({"t0": t0, "t1": time.time(), "plan": plan, "ids": ids}) + "\n")
            except Exception as exc:  # noqa: BLE001 - the test counts every failure
                out.write(json.dumps({"t0": t0, "error": f"{type(exc).__name__}: {exc}"}) + "\n")


if __name__ == "__main__":
    role, path, array, log, seconds, seed, *plans = sys.argv[1:]
    data = np.load(array).astype(np.float32)
    if role == "writer":
        write(path, data, log, float(seconds), int(seed))
    else:
        read(path, data, log, float(seconds), int(seed), plans)
