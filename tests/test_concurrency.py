"""Many readers (processes and threads) and one writer at once: no failures, one consistent state per search."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from matsearch import Collection

WORKER = Path(__file__).with_name("concurrency_worker.py")
PLANS = ["d384", "d32:200>d384", "p8@d64:100>d384", "g32@d64:50>d384"]
READERS, THREADS = 3, 4


@pytest.fixture(scope="module")
def shared_collection(scifact, tmp_path_factory):
    _, docs, queries = scifact
    folder = tmp_path_factory.mktemp("concurrent")
    with Collection.create(folder / "col") as col:
        col.add([str(i) for i in range(3000)], vectors=docs[:3000])
        col.build("ivf64@d64:d128,hnsw16@d64")
    np.save(folder / "vectors.npy", docs[3000:])
    np.save(folder / "queries.npy", queries[:200])
    return folder


def run_load(folder: Path, seconds: float, writer: bool) -> tuple[list[dict], list[dict]]:
    """Reader processes, plus threads sharing one Collection here, and optionally a writer process."""
    col_path = folder / "col"
    procs = []
    if writer:
        procs.append(subprocess.Popen([sys.executable, WORKER, "writer", col_path, folder / "vectors.npy",
                                       folder / "writes.jsonl", str(seconds), "1"]))
    for n in range(READERS):
        procs.append(subprocess.Popen([sys.executable, WORKER, "reader", col_path, folder / "queries.npy",
                                       folder / f"reads-{n}.jsonl", str(seconds), str(n), *PLANS]))
    queries = np.load(folder / "queries.npy")
    logs: list[list[dict]] = [[] for _ in range(THREADS)]
    with Collection.open(col_path) as col:
        def search(n):
            rng, end = np.random.default_rng(100 + n), time.monotonic() + seconds
            while time.monotonic() < end:
                plan, t0 = PLANS[int(rng.integers(len(PLANS)))], time.time()
                try:
                    ids = col.search(queries[int(rng.integers(len(queries)))], k=10, plan=plan).ids[0].tolist()
                    logs[n].append({"t0": t0, "t1": time.time(), "plan": plan, "ids": ids})
                except Exception as exc:  # noqa: BLE001 - counted below
                    logs[n].append({"t0": t0, "error": f"{type(exc).__name__}: {exc}"})
        threads = [threading.Thread(target=search, args=(n,)) for n in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for proc in procs:
        assert proc.wait(timeout=seconds + 120) == 0
    reads = [r for log in logs for r in log]
    for n in range(READERS):
        reads += [json.loads(line) for line in (folder / f"reads-{n}.jsonl").read_text().splitlines()]
    writes = [json.loads(line) for line in (folder / "writes.jsonl").read_text().splitlines()] if writer else []
    return reads, writes


def test_readers_and_threads_under_a_writer(shared_collection):
    idle, _ = run_load(shared_collection, 6, writer=False)
    reads, writes = run_load(shared_collection, 30, writer=True)
    errors = [r["error"] for r in idle + reads if "error" in r]
    assert not errors, f"{len(errors)} failed searches, e.g. {errors[:3]}"
    assert len(writes) > 100 and len(reads) > 1000
    added = {i: w["begun"] for w in writes if w["op"] == "add" for i in w["ids"]}
    deleted = {i: w["t"] for w in writes if w["op"] == "delete" for i in w["ids"]}
    for r in reads:
        for i in r["ids"]:
            assert deleted.get(i, np.inf) > r["t0"], f"id {i} deleted at {deleted[i]} returned by a search from {r['t0']}"
            assert added.get(i, 0) < r["t1"], f"id {i} returned by a search that ended before its add began"
    assert len({i for r in reads for i in r["ids"]} & set(added)) > 0  # readers did see the writer's rows
    latency = {name: np.median([r["t1"] - r["t0"] for r in rs]) for name, rs in (("idle", idle), ("writes", reads))}
    assert latency["writes"] <= 2 * latency["idle"], latency
