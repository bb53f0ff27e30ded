"""kill -9 the HTTP service while it ingests: no acknowledged write is lost and nothing is corrupt.

Ingests 50,000 pkgsum documents (precomputed vectors, the summaries as text) through `matsearch serve` in
batches of 500, SIGKILLs the server at a random moment of each of 20 trials, starts it again, and checks that
every batch it acknowledged is there (all ids, read by a reader beside the server), searchable (200 of them
searched by their own vector through the API come back first) and that `check_collection` finds nothing wrong
once the run ends. Re-sent batches are upserts, so a batch that committed without its answer does not fail.

    .venv/bin/python benchmarks/crash_server.py [--trials 20] [--docs 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from matsearch import Collection
from matsearch.collection.check import check_collection

PKGSUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "pkgsum"
KEY = "crash-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BATCH = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vectors = np.load(PKGSUM / "corpus.minilm.f16.npy")[: args.docs].astype(np.float32)
    texts = [line.split("\t", 1)[-1] for line in (PKGSUM / "corpus.tsv").read_text().splitlines()[: args.docs]]
    rng = np.random.default_rng(args.seed)
    root = Path(tempfile.mkdtemp(prefix="crash-server-"))
    acked: list[int] = []  # batches acknowledged
    pace = [0.2]  # seconds per batch, measured as the ingest goes
    passed = 0
    start = time.perf_counter()
    for trial in range(args.trials):
        last = trial == args.trials - 1
        with served(root) as (url, server):
            if trial == 0:
                httpx.post(f"{url}/v1/collections", json={"name": "pkgsum", "model": None}, headers=AUTH)
            verify(url, root, acked, vectors, rng)  # what the trials before acknowledged survived their kill
            if trial:
                passed += 1
                print(f"trial {trial:2d}: killed at {delay:.2f} s; restarted: all {len(acked) * BATCH:6d} "
                      "acknowledged documents there and searchable", flush=True)
            # kill somewhere in this trial's share of the batches left (at the measured seconds per batch)
            share = (len(vectors) // BATCH - len(acked)) * pace[0] / (args.trials - trial)
            delay = rng.uniform(0.3, 1.7) * max(share, 0.5)
            killer = None if last else threading.Timer(delay, os.kill, (server.pid, signal.SIGKILL))
            if killer:
                killer.start()
            ingest(url, vectors, texts, acked, pace)
            if killer:
                killer.join()
            elif len(acked) * BATCH < args.docs:
                raise SystemExit("the last trial did not finish the ingest")
    with served(root) as (url, _):
        verify(url, root, acked, vectors, rng)
    passed += 1
    print(f"trial {args.trials:2d}: finished the ingest; restarted: all {len(acked) * BATCH} acknowledged documents "
          "there and searchable", flush=True)
    problems = check_collection(root / "pkgsum")
    if problems:
        raise SystemExit(f"damaged after the run: {[str(p) for p in problems]}")
    summary = {"trials": args.trials, "passed": passed, "documents": len(acked) * BATCH, "batch": BATCH,
               "check": "clean", "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(summary))


class served:
    """`matsearch serve ROOT` in a process of its own on a free port, up when entered, stopped (if still alive)
    when left."""

    def __init__(self, root: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root = root

    def __enter__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "matsearch", "serve", str(self.root), "--port", str(self.port)],
            env={**os.environ, "MATSEARCH_API_KEY": KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url, self.process
            except httpx.TransportError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit("matsearch serve did not start")
                time.sleep(0.05)

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(30)


def ingest(url: str, vectors: np.ndarray, texts: list[str], acked: list[int], pace: list[float]) -> None:
    """Send the batches not acknowledged yet, in order, until done or the server dies (`pace`: seconds per batch,
    a running mean)."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=120) as http:
        for batch in range(len(acked), len(vectors) // BATCH):
            rows = range(batch * BATCH, (batch + 1) * BATCH)
            body = {"documents": [{"id": str(r), "vector": vectors[r].tolist(), "text": texts[r],
                                   "metadata": {"batch": batch}} for r in rows], "upsert": True}
            sent = time.perf_counter()
            try:
                response = http.post("/v1/collections/pkgsum/documents", json=body)
            except httpx.TransportError:
                return  # killed: this batch was not acknowledged
            if response.status_code != 200:
                raise SystemExit(f"batch {batch} refused: {response.text}")
            acked.append(batch)
            pace[0] = 0.8 * pace[0] + 0.2 * (time.perf_counter() - sent)


def verify(url: str, root: Path, acked: list[int], vectors: np.ndarray, rng) -> None:
    """Every acknowledged document is there (read beside the server) and a sample is found by its own vector."""
    if not acked:
        return
    rows = np.arange(len(acked) * BATCH)
    with httpx.Client(base_url=url, timeout=60) as http:
        http.get("/v1/collections/pkgsum").raise_for_status()  # the server opens (and recovers) it first
        with Collection.open(root / "pkgsum") as reader:
            reader.get([str(r) for r in rows])  # raises naming any acknowledged id that is missing
        for r in rng.choice(rows, size=min(200, len(rows)), replace=False):
            answer = http.post("/v1/collections/pkgsum/search", json={"vector": vectors[r].tolist(), "k": 3})
            found = [hit["id"] for hit in answer.json()["results"]]
            if str(r) not in found:
                raise SystemExit(f"acknowledged document {r} is not found by its own vector: {found}")


if __name__ == "__main__":
    main()
