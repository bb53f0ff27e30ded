"""AdANNS-PQ on pkgsum: PQ codes of M bytes on the best prefix against rigid PQ at M and 2M bytes.

Rigid PQ is FAISS IndexPQ on all 384 dims, twice: on the collection's elastic
(PCA) vectors, the issue's literal baseline, and on the original vectors. AdANNS
is matsearch's PQ on each d-prefix of the elastic vectors that M divides. Reported:
recall@10 against exact search of the codes' own ranking, and after re-ranking
their top 100 on all 384 dims; and which prefix `best_prefix` picks from a
sample of the collection alone (no test queries). Writes JSON and a markdown table.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_adanns_pq.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import faiss
import numpy as np
from common import ROOT, recall_at_10
from threadpoolctl import threadpool_limits

from matsearch import Collection, Plan
from matsearch.index import PQIndex, best_prefix
from matsearch.search import run_plan

DIMS = (32, 64, 96, 128, 192, 384)
RERANK = 100



def rigid_pq(vectors, queries, exact_scores, truth, code_bytes: int) -> dict:
    """FAISS IndexPQ on all dims: its own top 10, and its top 100 re-ranked exactly."""
    index = faiss.IndexPQ(vectors.shape[1], code_bytes, 8, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    _, found = index.search(queries, RERANK)
    reranked = [rows[np.argsort(-scores[rows], kind="stable")] for rows, scores in zip(found, exact_scores)]
    return {"recall@10": recall_at_10(found, truth), "recall@10_rerank": recall_at_10(reranked, truth)}


def adanns_pq(store, queries, truth, code_bytes: int, dim: int) -> dict:
    index = PQIndex(dim=dim, code_bytes=code_bytes).build(store)
    alone = run_plan(store, queries, Plan.parse(f"q@d{dim}"), 10, index=index)
    reranked = run_plan(store, queries, Plan.parse(f"q@d{dim}:{RERANK}>d384"), 10, index=index)
    return {"recall@10": recall_at_10(alone.ids, truth), "recall@10_rerank": recall_at_10(reranked.ids, truth)}


def markdown(summary) -> str:
    lines = ["| bytes | AdANNS PQ, best prefix | rigid PQ d384, elastic | rigid PQ d384, original "
             "| rigid at 2x bytes, elastic | rigid at 2x bytes, original |",
             "|---|---|---|---|---|---|"]
    cell = lambda r: f"{r['recall@10']:.3f} / {r['recall@10_rerank']:.3f}"  # noqa: E731
    for s in summary:
        lines.append(f"| {s['bytes']} | d{s['best_dim']} (sample picks d{s['picked_from_sample']}): {cell(s['adanns'])} "
                     f"| {cell(s['rigid_elastic'])} | {cell(s['rigid_original'])} "
                     f"| {cell(s['rigid_elastic_2x'])} | {cell(s['rigid_original_2x'])} |")
    return "\n".join(lines) + f"\n\nrecall@10 of the codes alone / after re-ranking their top {RERANK} on 384 dims.\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pkgsum")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--bytes", type=int, nargs="+", default=[8, 16, 32])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = np.load(args.data / "corpus.minilm.f16.npy").astype(np.float32)
    queries = np.load(args.data / "queries.minilm.f16.npy").astype(np.float32)
    original = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    faiss.omp_set_num_threads(2)
    summary, rows = [], []
    with threadpool_limits(2), tempfile.TemporaryDirectory() as tmp:
        col = Collection.create(Path(tmp) / "pkgsum")
        col.add([str(i) for i in range(len(corpus))], vectors=corpus)
        store, elastic_queries = col._store, col._transform.apply(queries)
        truth = run_plan(store, elastic_queries, Plan.exact(384), 10).ids
        elastic = store.rows(np.arange(store.count))
        elastic /= np.linalg.norm(elastic, axis=1, keepdims=True)
        exact_scores = elastic_queries @ elastic.T
        rigid = {}
        for m in sorted(set(args.bytes) | {2 * b for b in args.bytes}):
            rigid[m] = {"elastic": rigid_pq(elastic, elastic_queries, exact_scores, truth, m),
                        "original": rigid_pq(original, queries, exact_scores, truth, m)}
            print(f"rigid PQ{m} d384: elastic {rigid[m]['elastic']}, original {rigid[m]['original']}", flush=True)
        for m in args.bytes:
            dims = [d for d in DIMS if d % m == 0]
            ours = {}
            for dim in dims:
                ours[dim] = adanns_pq(store, elastic_queries, truth, m, dim)
                rows.append({"bytes": m, "dim": dim, **ours[dim]})
                print(f"AdANNS PQ{m} d{dim}: {ours[dim]}", flush=True)
            best = max(ours, key=lambda d: ours[d]["recall@10"])
            picked, _ = best_prefix(store, m, dims=dims, sample=1000)
            summary.append({"bytes": m, "best_dim": best, "picked_from_sample": picked, "adanns": ours[best],
                            "rigid_elastic": rigid[m]["elastic"], "rigid_original": rigid[m]["original"],
                            "rigid_elastic_2x": rigid[2 * m]["elastic"], "rigid_original_2x": rigid[2 * m]["original"]})
        col.close()
    table = markdown(summary)
    print(table)
    (args.out / "adanns_pq_pkgsum.md").write_text(table)
    (args.out / "adanns_pq_pkgsum.json").write_text(json.dumps({"adanns": rows, "summary": summary,
                                                                 "rigid": rigid}, indent=2))


if __name__ == "__main__":
    main()
