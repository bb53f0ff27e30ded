"""Issue 12 point 2, second round: what makes the fast-scan IVF first stage faster, measured through run_plan.

On pkgsum (one thread, one query at a time and all 1,000 queries in one call; recall@10 against exact search
on all 1,000 queries; each timing the best of 3 rounds), for `ivf<lists>@d64:d<ds>/pq<M>x4fs` built on one
store: faiss's fast-scan kernel choice (`implem`), the number of lists (1,024, 2,048, 4,096) and the lists
probed, and the shortlist re-ranked. FAISS HNSW32,Flat at efSearch 48 is timed in the same run as the
reference. Writes proto_fastscan_knobs_pkgsum.json.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/proto_fastscan_knobs.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from common import PKGSUM, ROOT, elastic_collection, exact_top10, load_vectors, recall_at_10
from threadpoolctl import threadpool_limits

from matsearch import Plan
from matsearch.index import IVFIndex
from matsearch.search import run_plan

K, ROUNDS = 10, 3
# (lists, scan dim, sub-spaces) -> plans (probes, shortlist)
INDEXES = {
    (1024, 192, 96): [(128, 100), (128, 50), (160, 50)],
    (2048, 192, 96): [(192, 100), (256, 100), (256, 50), (320, 50)],
    (4096, 192, 96): [(384, 100), (512, 100), (512, 50)],
    (1024, 128, 64): [(192, 100), (128, 200)],
}
IMPLEMS = (0, 10, 11, 12, 13, 14, 15)  # faiss 1.15 has no 16


def one_by_one(search, queries):
    search(queries[:1])
    best, found, first = float("inf"), None, None
    for _ in range(ROUNDS):
        stage0, out = 0.0, []
        start = time.perf_counter()
        for i in range(len(queries)):
            result = search(queries[i : i + 1])
            out.append(result[0])
            stage0 += result[1]
        seconds = (time.perf_counter() - start) / len(queries)
        if seconds < best:
            best, found, first = seconds, out, stage0 / len(queries)
    return best * 1e3, np.vstack(found), first * 1e3


def batched(search, queries):
    search(queries[:2])
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        search(queries)
        best = min(best, (time.perf_counter() - start) / len(queries))
    return best * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "proto_fastscan_knobs_pkgsum.json")
    args = parser.parse_args()
    corpus, queries = load_vectors(PKGSUM)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        col, _ = elastic_collection(Path(tmp) / "c", corpus)
        store = col._store
        elastic = np.ascontiguousarray(col.transform.apply(queries), dtype=np.float32)
        truth = exact_top10(col, elastic)
        indexes = {}
        for n_lists, ds, m in INDEXES:
            start = time.perf_counter()
            indexes[(n_lists, ds, m)] = IVFIndex(n_lists=n_lists, centroid_dim=64, scan_dim=ds,
                                                 codec=f"pq{m}x4fs").build(store)
            print(f"built ivf{n_lists}@d64:d{ds}/pq{m}x4fs in {time.perf_counter() - start:.0f} s", flush=True)
        unit = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
        hnsw = faiss.IndexHNSWFlat(384, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.add(unit)
        hnsw.hnsw.efSearch = 48
        unit_q = np.ascontiguousarray(queries / np.linalg.norm(queries, axis=1, keepdims=True))
        faiss.omp_set_num_threads(1)
        with threadpool_limits(1):
            ms, found, _ = one_by_one(lambda q: (hnsw.search(q, K)[1][0], 0.0), unit_q)
            rows.append(_row("FAISS HNSW32,Flat", "efSearch=48", recall_at_10(found, truth), ms, 0.0,
                             batched(lambda q: hnsw.search(q, K), unit_q)))
            key, (probes, keep) = (1024, 192, 96), INDEXES[(1024, 192, 96)][0]
            for implem in IMPLEMS:  # the kernel choice, on the first index and plan
                indexes[key].lists_.codes.implem = implem
                rows.append(_ours(store, indexes[key], key, probes, keep, elastic, truth, implem))
            indexes[key].lists_.codes.implem = 0
            for key, plans in INDEXES.items():
                for probes, keep in plans:
                    rows.append(_ours(store, indexes[key], key, probes, keep, elastic, truth, 0))
        col.close()
    args.out.write_text(json.dumps(rows, indent=2))


def _ours(store, index, key, probes, keep, elastic, truth, implem):
    n_lists, ds, m = key
    plan = Plan.parse(f"p{probes}@d{ds}:{keep}>d384")

    def search(q):
        result = run_plan(store, q, plan, K, index=index)
        return result.ids[0], result.cost.stage_seconds[0]

    ms, found, first = one_by_one(search, elastic)
    batch = batched(lambda q: run_plan(store, q, plan, K, index=index), elastic)
    return _row(f"ivf{n_lists}@d64:d{ds}/pq{m}x4fs", f"{plan} implem={implem}", recall_at_10(found, truth), ms,
                first, batch)


def _row(method, setting, recall, ms, first_ms, batch_ms):
    row = {"method": method, "setting": setting, "recall": recall, "ms": ms, "first_stage_ms": first_ms,
           "batch_ms": batch_ms}
    print(f"{method:<28} {setting:<34} recall@10 {recall:.3f}  {ms:.3f} ms (stage 0 {first_ms:.3f})  "
          f"batch {batch_ms:.3f} ms", flush=True)
    return row


if __name__ == "__main__":
    main()
