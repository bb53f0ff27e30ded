"""The HTTP service under load on pkgsum: QPS and p50/p99 latency of searches over loopback from 1, 4 and 8
concurrent clients, with and without a writer upserting 200 documents/s meanwhile, and the cost of HTTP per search against the
same search called in process.

Builds pkgsum (100k MiniLM vectors, PCA-elastic, recipe ivf256@d64:d128/pq64x4fs) in a temporary folder, serves
it with `matsearch serve`, and times a fixed number of searches (plan p56@d128:150>d256:20>d384) per setting.
Writes benchmarks/results/server_pkgsum.{json,md}.

    .venv/bin/python benchmarks/bench_server.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from matsearch import Collection

ROOT = Path(__file__).resolve().parents[1]
PKGSUM = ROOT.parent / "shared" / "data" / "pkgsum"
RESULTS = ROOT / "benchmarks" / "results"
RECIPE, PLAN = "ivf256@d64:d128/pq64x4fs", "p56@d128:150>d256:20>d384"
KEY = "bench-key"
CLIENTS = (1, 4, 8)
WRITE_EVERY = 0.5  # seconds between batches of 100 upserts: 200 documents/s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="searches per setting")
    args = parser.parse_args()
    corpus = np.load(PKGSUM / "corpus.minilm.f16.npy").astype(np.float32)
    queries = np.load(PKGSUM / "queries.minilm.f16.npy").astype(np.float32)
    folder = Path(tempfile.mkdtemp(prefix="bench-server-"))
    with Collection.create(folder / "pkgsum", model=None) as col:
        col.add([str(i) for i in range(len(corpus))], vectors=corpus)
        col.build(RECIPE)
    in_process = time_in_process(folder / "pkgsum", queries, args.requests)
    rows = []
    with serve(folder) as url:
        for writes in (False, True):
            for clients in CLIENTS:
                rows.append({"clients": clients, "writes": writes,
                             **load(url, queries, clients, args.requests, corpus if writes else None)})
                print(json.dumps(rows[-1]), flush=True)
    report(rows, in_process, args.requests)


def time_in_process(path: Path, queries: np.ndarray, n: int) -> dict:
    """Collection.search, one query at a time in one thread: the call the service wraps."""
    with Collection.open(path) as col:
        for q in queries[:50]:
            col.search(q[None], k=10, plan=PLAN)
        seconds = []
        for i in range(n):
            start = time.perf_counter()
            col.search(queries[i % len(queries)][None], k=10, plan=PLAN)
            seconds.append(time.perf_counter() - start)
    return summary(seconds, sum(seconds))


class serve:
    """`matsearch serve` on a free loopback port, for the length of a `with`."""

    def __init__(self, root: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root = root

    def __enter__(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "matsearch", "serve", str(self.root), "--port", str(self.port)],
            env={**os.environ, "MATSEARCH_API_KEY": KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{self.port}"
        for _ in range(600):
            try:
                httpx.get(f"{url}/v1/collections/pkgsum", timeout=60).raise_for_status()  # opened, warm
                return url
            except httpx.TransportError:
                time.sleep(0.1)
        raise SystemExit("matsearch serve did not start")

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(60)


def load(url: str, queries: np.ndarray, clients: int, n: int, corpus: np.ndarray | None) -> dict:
    """`n` searches shared by `clients` threads, each with its own connection; with `corpus`, a writer upserts
    batches of 100 of its vectors (under new ids) meanwhile."""
    bodies = [json.dumps({"vector": q.tolist(), "k": 10, "plan": PLAN}).encode() for q in queries]
    stop, written = threading.Event(), [0]
    writer = threading.Thread(target=upsert, args=(url, corpus, stop, written)) if corpus is not None else None
    if writer:
        writer.start()
        time.sleep(0.5)

    def client(part: int) -> list[float]:
        seconds = []
        with httpx.Client(base_url=url, headers={"Content-Type": "application/json"}, timeout=60) as http:
            http.post("/v1/collections/pkgsum/search", content=bodies[0])  # connect
            for i in range(part, n, clients):
                start = time.perf_counter()
                http.post("/v1/collections/pkgsum/search", content=bodies[i % len(bodies)]).raise_for_status()
                seconds.append(time.perf_counter() - start)
        return seconds

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        seconds = [s for part in pool.map(client, range(clients)) for s in part]
    wall = time.perf_counter() - start
    if writer:
        stop.set()
        writer.join()
    return {**summary(seconds, wall), "upserted_per_s": written[0] / wall if writer else 0.0}


def upsert(url: str, corpus: np.ndarray, stop: threading.Event, written: list[int]) -> None:
    """Upsert a batch of 100 documents every `WRITE_EVERY` seconds (a steady ingest, not a flood)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
        batch = 0
        while not stop.wait(WRITE_EVERY):
            rows = range((batch * 100) % len(corpus), (batch * 100) % len(corpus) + 100)
            http.post("/v1/collections/pkgsum/documents", json={"upsert": True, "documents": [
                {"id": f"w{batch % 50}-{n}", "vector": corpus[r].tolist()} for n, r in enumerate(rows)]}
            ).raise_for_status()
            written[0] += 100
            batch += 1


def summary(seconds: list[float], wall: float) -> dict:
    ms = np.array(seconds) * 1e3
    return {"qps": len(seconds) / wall, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean())}


def report(rows: list[dict], in_process: dict, n: int) -> None:
    one = next(r for r in rows if r["clients"] == 1 and not r["writes"])
    lines = [f"pkgsum (100k), recipe `{RECIPE}`, plan `{PLAN}`, k=10, {n} searches per row, loopback, "
             f"{os.cpu_count()} cores shared by server and clients",
             "", "| clients | concurrent upserts | QPS | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for r in rows:
        writes = f"yes ({r['upserted_per_s']:.0f} docs/s)" if r["writes"] else "no"
        lines.append(f"| {r['clients']} | {writes} | {r['qps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    lines += ["", f"In process (`Collection.search`, one thread): p50 {in_process['p50_ms']:.3f} ms, "
                  f"mean {in_process['mean_ms']:.3f} ms; over HTTP with one client: p50 {one['p50_ms']:.3f} ms, "
                  f"mean {one['mean_ms']:.3f} ms: HTTP adds {one['p50_ms'] - in_process['p50_ms']:.3f} ms at p50 "
                  f"({one['mean_ms'] - in_process['mean_ms']:.3f} ms mean) per search."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "server_pkgsum.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "server_pkgsum.json").write_text(json.dumps({"rows": rows, "in_process": in_process}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
