"""Prototype for issue 12 point 2: an AdANNS IVF first stage with 4-bit fast-scan PQ codes of a prefix.

Lists are k-means clusters of the (normalised) 64-dim prefix, so the coarse step costs 1024×64 multiply-adds
instead of FAISS IVF's 1024×384; the lists hold faiss IndexIVFPQFastScan codes (4 bits per sub-space) of the
residual of the d_s-prefix to its list's mean, filled by our own assignment (packed 32 to a block) and
searched over the lists we probe (search_preassigned, given each list's coarse term), and the best `keep`
are re-ranked on all 384 dims from the memory-mapped store. Timed one query at a time, one thread, on pkgsum,
in one run: the raw-faiss prototype, the same as the list codec through run_plan (`ivf1024@d64:d<ds>/pq<M>x4fs`),
FAISS HNSW32,Flat, FAISS IVF1024,PQ96x4fs + IndexRefineFlat, and our `hnsw32@d192/int8` graph and
`ivf1024@d64:d128/int8` lists through run_plan (no Collection API around any of ours). Recall@10 on all 1,000
queries against exact search; each timing the best of 3 rounds; stage 0's mean time per query is kept too.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/proto_ivf_fastscan.py
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
from matsearch.index.ivf import nearest_list, prefix_of
from matsearch.index import IVFIndex
from matsearch.index.ivf_lists import add_packed, list_means
from matsearch.matryoshka import normalize
from matsearch.search import run_plan

N_LISTS, CENTROID_DIM, K = 1024, 64, 10
ROUNDS = 3


class FastScanLists:
    """IVF over our own k-means lists (centroids at `centroid_dim`), holding 4-bit PQ fast-scan codes of the
    `scan_dim` prefix (by residual to the list's mean at scan_dim, or of the prefix itself)."""

    def __init__(self, store, centroids, lists, scan_dim, m, residual, bbs=32):
        prefix = normalize(prefix_of(store, scan_dim))
        means = list_means(prefix, lists, N_LISTS)
        quantizer = faiss.IndexFlatIP(scan_dim)
        quantizer.add(means)
        self.codes = faiss.IndexIVFPQFastScan(quantizer, scan_dim, N_LISTS, m, 4, faiss.METRIC_INNER_PRODUCT, bbs)
        self.codes.by_residual = residual
        sample = np.sort(np.random.default_rng(0).choice(len(prefix), 50_000, replace=False))
        train, assign = np.ascontiguousarray(prefix[sample]), np.ascontiguousarray(lists[sample], dtype=np.int64)
        if residual:
            train = np.ascontiguousarray(train - means[assign])
        self.codes.train_encoder(len(train), faiss.swig_ptr(train), None)
        self.codes.is_trained = True
        add_packed(self.codes, prefix, np.arange(len(prefix), dtype=np.int64), lists.astype(np.int64))
        self.centroids, self.means, self.scan_dim, self.residual = centroids, means, scan_dim, residual
        self.m, self.cdim = m, centroids.shape[1]
        self.store = store
        self.sizes = np.bincount(lists, minlength=N_LISTS)

    def first_stage(self, q, nprobe, keep):
        scores = self.centroids @ q[: self.cdim]
        probe = np.argpartition(-scores, nprobe - 1)[:nprobe]
        self.codes.nprobe = nprobe
        coarse = (self.means[probe] @ q[: self.scan_dim])[None, :] if self.residual else None
        _, found = self.codes.search_preassigned(q[None, : self.scan_dim], keep, probe[None, :].astype(np.int64),
                                                 coarse)
        rows = found[0]
        return rows[rows >= 0]

    def search(self, q, nprobe, keep):
        rows = self.first_stage(q, nprobe, keep)
        scores = self.store.dots(q, 0, 384, rows) * self.store.inv_prefix_norms(384, rows)
        return rows[np.argsort(-scores)[:K]]

    def resident(self):
        lists = faiss.downcast_InvertedLists(self.codes.invlists)
        codes = int(np.sum(-(-self.sizes // lists.n_per_block))) * lists.block_size
        return (codes + 8 * self.sizes.sum() + self.centroids.nbytes + self.means.nbytes) / self.sizes.sum()


def timed(search, queries, rounds=ROUNDS):
    search(queries[0])
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        found = [search(q) for q in queries]
        best = min(best, (time.perf_counter() - start) / len(queries))
    return best * 1e3, found


# (scan dim, sub-spaces): raw-faiss settings (lists probed, shortlist) near recall 0.95 in a recall-only sweep
VARIANTS = {(128, 64): [(128, 200), (160, 100), (160, 200), (192, 100)],
            (192, 96): [(128, 100), (160, 50), (160, 100), (192, 50)],
            (128, 32): [(192, 400), (256, 400)]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "proto_fastscan_pkgsum.json")
    args = parser.parse_args()
    corpus, queries = load_vectors(PKGSUM)
    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        col, _ = elastic_collection(Path(tmp) / "c", corpus)
        col.build("hnsw32@d192/int8")
        store, graph = col._store, col._indexes["g"]
        elastic = np.ascontiguousarray(col.transform.apply(queries), dtype=np.float32)
        truth = exact_top10(col, elastic)
        ivf_int8 = IVFIndex(n_lists=N_LISTS, centroid_dim=CENTROID_DIM, scan_dim=128, codec="int8").build(store)
        coded = {v: IVFIndex(n_lists=N_LISTS, centroid_dim=CENTROID_DIM, scan_dim=v[0], codec=f"pq{v[1]}x4fs")
                 .build(store) for v in VARIANTS}
        c_prefix = normalize(prefix_of(store, CENTROID_DIM))
        kmeans = faiss.Kmeans(CENTROID_DIM, N_LISTS, niter=20, seed=0, spherical=True, max_points_per_centroid=256)
        kmeans.train(c_prefix)
        lists = nearest_list(kmeans.centroids, c_prefix)
        raw = {v: FastScanLists(store, kmeans.centroids, lists, v[0], v[1], True) for v in VARIANTS}
        unit = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
        unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        hnsw = faiss.IndexHNSWFlat(384, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.add(unit)
        pqfs = faiss.IndexRefineFlat(faiss.index_factory(384, "IVF1024,PQ96x4fs", faiss.METRIC_INNER_PRODUCT))
        pqfs.train(unit)
        pqfs.add(unit)
        faiss.omp_set_num_threads(1)
        with threadpool_limits(1):
            for ef in (32, 40, 48, 56):
                hnsw.hnsw.efSearch = ef
                ms, found = timed(lambda q: hnsw.search(q[None], K)[1][0], unit_q)
                rows_out.append(_row("FAISS HNSW32,Flat", f"efSearch={ef}", found, truth, ms, 1808))
            for nprobe, kf in ((64, 16), (96, 16), (128, 8), (128, 16)):
                faiss.extract_index_ivf(pqfs.base_index).nprobe = nprobe
                pqfs.k_factor = kf
                ms, found = timed(lambda q: pqfs.search(q[None], K)[1][0], unit_q)
                rows_out.append(_row("FAISS IVF1024,PQ96x4fs+refine", f"nprobe={nprobe},k_factor={kf}", found,
                                     truth, ms, 72))
            for text in ("g40@d192:32>d384", "g48@d192:32>d384", "g56@d192:40>d384"):
                rows_out.append(_ours("ours hnsw32@d192/int8", text, store, graph, elastic, truth))
            for text in ("p128@d128:100>d384", "p160@d128:100>d384"):
                rows_out.append(_ours("ours ivf1024@d64:d128/int8", text, store, ivf_int8, elastic, truth))
            for (ds, m), settings in VARIANTS.items():
                for nprobe, keep in settings:
                    name = f"proto raw faiss d64 lists, d{ds} pq{m}x4fs"
                    ms, found = timed(lambda q: raw[(ds, m)].search(q, nprobe, keep), elastic)
                    first, _ = timed(lambda q: raw[(ds, m)].first_stage(q, nprobe, keep), elastic, 2)
                    row = _row(name, f"p{nprobe}:{keep}", found, truth, ms, raw[(ds, m)].resident())
                    row["first_stage_ms"] = first
                    rows_out.append(row)
                    rows_out.append(_ours(f"ours ivf1024@d64:d{ds}/pq{m}x4fs", f"p{nprobe}@d{ds}:{keep}>d384",
                                          store, coded[(ds, m)], elastic, truth))
        col.close()
    args.out.write_text(json.dumps(rows_out, indent=2))


def _ours(name, text, store, index, elastic, truth):
    plan = Plan.parse(text)
    stage0 = []

    def search(q):
        result = run_plan(store, q, plan, K, index=index)
        stage0.append(result.cost.stage_seconds[0])
        return result.ids[0]

    ms, found = timed(search, elastic)
    row = _row(name, text, found, truth, ms, index.resident_bytes() / store.count)
    row["first_stage_ms"] = float(np.mean(stage0[-len(elastic):])) * 1e3
    return row


def _row(method, setting, found, truth, ms, resident):
    row = {"method": method, "setting": setting, "recall": recall_at_10(np.vstack(found), truth), "ms": ms,
           "resident": float(resident)}
    print(f"{method:<44} {setting:<24} recall@10 {row['recall']:.3f}  {ms:.3f} ms  {row['resident']:.0f} B/vec",
          flush=True)
    return row


if __name__ == "__main__":
    main()
