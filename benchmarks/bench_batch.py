"""Batched search on pkgsum: per-query time at batch 1 (one query at a time) against batch 1,000,
through `Collection.search`, for our recipes and for FAISS HNSW32 in the same run.

One thread (faiss and BLAS), 1,000 queries, recall@10 against exact search on all 384 dims.
Ours: `Collection.search(vectors, plan=...)` with raw MiniLM query vectors (the collection applies
its PCA rotation and maps rows to ids) — once per query, and once with all 1,000 as one 2-D array.
FAISS: `IndexHNSWFlat(384, 32)` on the normalised raw vectors, `search` per query and for the
whole batch, over a sweep of efSearch. Every setting's recall is taken from its batched run; for
ours, the queries whose ids differ between the batched and the one-at-a-time run are counted. The table keeps, per method, the setting
fastest in batch that reaches recall 0.95. This VM's speed drifts by tens of percent over minutes,
so every timing is the best of 3 rounds, in each of 3 passes that time ours and then FAISS's, and
each setting keeps its best pass (all passes are in the JSON).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_batch.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from common import PKGSUM, ROOT, elastic_collection, exact_top10, load_vectors, per_query_seconds, recall_at_10
from threadpoolctl import threadpool_limits

from matsearch import Collection

TARGET = 0.95
RECIPE = "hnsw32@d192/int8,ivf1024@d64:d128/int8,bin128"  # one index of each kind, in one collection
PLANS = {
    "hnsw32@d192/int8": ["g40@d192:32>d384", "g48@d192:32>d384", "g56@d192:40>d384"],
    "ivf1024@d64:d128/int8": ["p96@d128:100>d384", "p128@d128:100>d384"],
    "bin128": ["h@b128:800>d128:100>d384", "h@b128:1000>d128:100>d384"],
}
EF_SEARCH = (32, 40, 48, 56, 64)
ROUNDS = 3
PASSES = 3


def batch_seconds(search, queries, rounds: int = ROUNDS):
    """Seconds per query of `search` called once on all the queries, the best of `rounds`, and its result."""
    search(queries[:2])
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        result = search(queries)
        best = min(best, (time.perf_counter() - start) / len(queries))
    return best, result


def ours(col, queries, truth, rows=None):
    """Every plan at batch 1 and batch 1,000 (updating `rows` with the better times if given)."""
    rows = rows or [{"recipe": recipe, "setting": plan} for recipe, plans in PLANS.items() for plan in plans]
    for row in rows:
        plan = row["setting"]
        single, singles = per_query_seconds(lambda q: col.search(q, k=10, plan=plan).ids[0], queries, ROUNDS)
        batch, result = batch_seconds(lambda q: col.search(q, k=10, plan=plan), queries)
        found = result.ids.astype(np.int64)  # the collection's ids are the row numbers, as text
        differ = int(np.count_nonzero((np.vstack(singles).astype(np.int64) != found).any(axis=1)))
        row.update(recall=recall_at_10(found, truth), queries_differing=differ)
        _keep(row, single, batch)
    return rows


def faiss_hnsw(corpus):
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(corpus.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    faiss.omp_set_num_threads(2)
    index.add(corpus)
    faiss.omp_set_num_threads(1)
    print(f"FAISS HNSW32 built in {time.perf_counter() - start:.0f} s", flush=True)
    return index


def theirs(index, queries, truth, rows=None):
    """FAISS HNSW32 at every efSearch, batch 1 and batch 1,000 (updating `rows` with the better times if given)."""
    rows = rows or [{"recipe": "FAISS HNSW32,Flat", "setting": f"efSearch={ef}", "ef": ef} for ef in EF_SEARCH]
    for row in rows:
        index.hnsw.efSearch = row["ef"]
        single, _ = per_query_seconds(lambda q: index.search(q, 10)[1], queries, ROUNDS)
        batch, (_, found) = batch_seconds(lambda q: index.search(q, 10), queries)
        row.update(recall=recall_at_10(found, truth))
        _keep(row, single, batch)
    return rows


def _keep(row, single, batch):
    """Record a pass's seconds per query in `row`, which keeps the best of its passes."""
    row.setdefault("passes", []).append({"batch1_ms": single * 1e3, "batch_ms": batch * 1e3})
    row["batch1_ms"] = min(p["batch1_ms"] for p in row["passes"])
    row["batch_ms"] = min(p["batch_ms"] for p in row["passes"])
    print(f"{row['recipe']:<24} {row['setting']:<28} recall@10 {row['recall']:.3f}  batch 1 {single * 1e3:.3f} ms"
          f"  batch {batch * 1e3:.3f} ms/query", flush=True)


def fastest(rows, recipe):
    hits = [r for r in rows if r["recipe"] == recipe and r["recall"] >= TARGET]
    return min(hits, key=lambda r: r["batch_ms"], default=None)


def markdown(report) -> str:
    ref = fastest(report["rows"], "FAISS HNSW32,Flat")
    lines = [f"Batched search on pkgsum ({report['items']:,} × 384, {report['queries']:,} queries, one thread, "
             f"faiss {report['faiss_version']}): per method, the setting fastest at batch {report['queries']:,} "
             f"that reaches recall@10 ≥ {TARGET}. Ours through `Collection.search` (raw query vectors in, ids out).",
             "",
             "| method | setting | recall@10 | batch 1: ms/query | batch 1,000: ms/query | batch ÷ one-by-one "
             "| QPS at batch 1,000 | × HNSW32 batched QPS |",
             "|---|---|---|---|---|---|---|---|"]
    for recipe in dict.fromkeys(r["recipe"] for r in report["rows"]):
        best = fastest(report["rows"], recipe)
        name = recipe if recipe.startswith("FAISS") else f"matsearch `{recipe}`"
        if best is None:
            lines.append(f"| {name} | none reaches {TARGET} | | | | | | |")
            continue
        lines.append(f"| {name} | `{best['setting']}` | {best['recall']:.3f} | {best['batch1_ms']:.3f} "
                     f"| {best['batch_ms']:.3f} | {best['batch_ms'] / best['batch1_ms']:.2f} "
                     f"| {1e3 / best['batch_ms']:,.0f} | {ref['batch_ms'] / best['batch_ms']:.2f} |")
    lines += ["", "Every setting run (queries whose ids differ between batch and one-by-one: ours only):", "",
              "| method | setting | recall@10 | batch 1: ms/query | batch 1,000: ms/query | queries differing |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['recipe']} | `{r['setting']}` | {r['recall']:.3f} | {r['batch1_ms']:.3f} | {r['batch_ms']:.3f} "
              f"| {r.get('queries_differing', '')} |" for r in report["rows"]]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--collection", type=Path, help="reuse a pkgsum collection already built with the recipe")
    args = parser.parse_args()
    corpus, queries = load_vectors(PKGSUM)
    with tempfile.TemporaryDirectory() as tmp:
        if args.collection:
            col = Collection.open(args.collection)
        else:
            col, _ = elastic_collection(Path(tmp) / "c", corpus)
            start = time.perf_counter()
            col.build(RECIPE, progress=True)
            print(f"built {RECIPE} in {time.perf_counter() - start:.0f} s", flush=True)
        truth = exact_top10(col, col.transform.apply(queries))
        normalised = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
        unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        index = faiss_hnsw(normalised)
        with threadpool_limits(1):
            rows = reference = None
            for _ in range(PASSES):  # ours and FAISS's in turn; each keeps its best pass
                rows = ours(col, queries, truth, rows)
                reference = theirs(index, unit_queries, truth, reference)
        col.close()
    report = {"data": str(PKGSUM), "items": len(corpus), "queries": len(queries), "threads": 1,
              "faiss_version": faiss.__version__, "recipe": RECIPE,
              "collection": str(args.collection) if args.collection else "built in this run", "rows": rows + reference}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch_pkgsum.json").write_text(json.dumps(report, indent=2))
    (args.out / "batch_pkgsum.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
