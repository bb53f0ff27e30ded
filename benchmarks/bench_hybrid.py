"""Hybrid lexical + dense search on SciFact, NPL and Cranfield: nDCG@10 of each mode, and what hybrid adds per query.

For each collection a Collection is made from its corpus texts and precomputed MiniLM
vectors (PCA transform, the bundled encoder as its model), then `matsearch.eval.evaluate`
scores dense (exact), lexical (BM25) and hybrid (RRF k=60 over the top 100 of each, and
weighted sums of min-max normalised scores) with the precomputed query vectors. Latency is
timed through `Collection.search` one query at a time on one thread (torch too): with a
text query (the encoder embeds it: what a user calls) dense against hybrid, and with the
vector precomputed (dense: the vector; hybrid: the text plus `query_vectors`); each is the
best of 3 rounds, the ways taking turns query by query. The lexical index's own costs are timed
too: built from the texts, saved, loaded by a reader, and brought up to date after an add.
Writes benchmarks/results/hybrid.json and hybrid.md.

    .venv/bin/python benchmarks/bench_hybrid.py [--collections scifact npl cranfield] [--latency-queries 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import ROOT
from threadpoolctl import threadpool_limits

from matsearch import Collection
from matsearch.data import load_beir
from matsearch.eval import evaluate

DATA = ROOT.parent / "shared" / "data"
TARGETS = {  # issue 14's figures: dense, BM25, RRF hybrid
    "scifact": (0.6451, 0.6863, 0.7168), "npl": (0.4336, 0.4280, 0.4890), "cranfield": (0.3736, 0.3650, 0.4050),
}
RUNS = {"dense": ("dense", None), "bm25": ("lexical", None), "rrf": ("hybrid", "rrf:k60:n100"),
        "w0.3": ("hybrid", "weighted:w0.3:n100"), "w0.5": ("hybrid", "weighted:w0.5:n100"),
        "w0.7": ("hybrid", "weighted:w0.7:n100")}


def build(folder: Path, dataset, docs: np.ndarray) -> dict:
    """The collection, then the lexical index's costs: built from the texts by the first lexical search,
    saved by the writer's close, loaded by a reader, and extended after an add of 10 items."""
    start = time.perf_counter()
    with Collection.create(folder) as col:
        col.add(dataset.doc_ids, texts=dataset.doc_texts, vectors=docs, metadata=dataset.doc_metadata)
        added = time.perf_counter() - start
        start = time.perf_counter()
        col.search("warm up", k=10, mode="lexical")
        built = time.perf_counter() - start
        start = time.perf_counter()
    saved = time.perf_counter() - start
    with Collection.open(folder) as col:
        start = time.perf_counter()
        col.search("warm up", k=10, mode="lexical")
        loaded = time.perf_counter() - start
    with Collection.open(folder, writable=True) as col:
        col.search("warm up", k=10, mode="lexical")
        col.add([f"extra-{n}" for n in range(10)], texts=dataset.doc_texts[:10], vectors=docs[:10])
        start = time.perf_counter()
        col.search("warm up", k=10, mode="lexical")
        extended = time.perf_counter() - start
        col.delete([f"extra-{n}" for n in range(10)])
    return {"add_seconds": added, "lexical_build_seconds": built, "lexical_save_seconds": saved,
            "lexical_load_seconds": loaded, "lexical_extend_after_add_seconds": extended}


def latency(col: Collection, texts: list[str], vectors: np.ndarray, rounds: int = 3) -> dict:
    """ms per query of dense and hybrid, with text queries and with precomputed vectors, and lexical alone.
    Each query is searched by each way in turn, `rounds` times; a query's time is its best round (the
    encoder's time drifts by milliseconds between calls, more than hybrid adds), the mean is over queries."""
    ways = {
        "text_dense": lambda n: col.search(texts[n], k=10, mode="dense"),
        "text_hybrid": lambda n: col.search(texts[n], k=10, mode="hybrid"),
        "vector_dense": lambda n: col.search(vectors[n], k=10, mode="dense"),
        "vector_hybrid": lambda n: col.search(texts[n], k=10, mode="hybrid", query_vectors=vectors[n : n + 1]),
        "lexical": lambda n: col.search(texts[n], k=10, mode="lexical"),
    }
    for search in ways.values():
        search(0)
    best = {name: np.full(len(texts), np.inf) for name in ways}
    for _ in range(rounds):
        for n in range(len(texts)):
            for name, search in ways.items():
                start = time.perf_counter()
                search(n)
                best[name][n] = min(best[name][n], time.perf_counter() - start)
    ms = {name: 1e3 * float(times.mean()) for name, times in best.items()}
    ms["hybrid_adds_text"] = ms["text_hybrid"] - ms["text_dense"]
    ms["hybrid_adds_vector"] = ms["vector_hybrid"] - ms["vector_dense"]
    return ms


def machine() -> str:
    """'2-core Intel(R) Xeon(R) Processor, AVX-512' (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())
    simd = "AVX-512" if " avx512f" in cpuinfo else "AVX2" if " avx2" in cpuinfo else "no AVX2"
    return f"{os.cpu_count()}-core {name}, {simd}; searches on one thread"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", nargs="+", default=list(TARGETS))
    parser.add_argument("--latency-queries", type=int, default=100, help="queries timed per collection")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    report = {"machine": machine(), "collections": {}}
    for name in args.collections:
        folder = DATA / name
        dataset = load_beir(folder)
        docs = np.load(folder / "corpus.minilm.f16.npy").astype(np.float32)
        queries = np.load(folder / "queries.minilm.f16.npy").astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
            entry = {"documents": len(docs), **build(Path(tmp) / "col", dataset, docs)}
            with Collection.open(Path(tmp) / "col") as col:
                entry["modes"] = {}
                for label, (mode, fusion) in RUNS.items():
                    metrics = evaluate(col, dataset, query_vectors=queries, mode=mode, fusion=fusion)
                    entry["modes"][label] = metrics
                    print(f"{name:10s} {metrics['plan']:48s} nDCG@10 {metrics['ndcg@10']:.4f} "
                          f"recall@100 {metrics['recall@100']:.3f}  {metrics['qps']:7.0f} q/s", flush=True)
                judged = [n for n, q in enumerate(dataset.query_ids) if q in dataset.qrels][: args.latency_queries]
                entry["latency_ms"] = latency(col, [dataset.query_texts[n] for n in judged], queries[judged])
                entry["latency_queries"] = len(judged)
            print(f"{name:10s} " + ", ".join(f"{k} {v:.3f}" for k, v in entry["latency_ms"].items()) + " ms",
                  flush=True)
            print(f"{name:10s} lexical index: " + ", ".join(f"{k} {v:.3f}s" for k, v in entry.items()
                                                            if k.startswith("lexical_")), flush=True)
        report["collections"][name] = entry
    (args.out / "hybrid.json").write_text(json.dumps(report, indent=2))
    (args.out / "hybrid.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report) -> str:
    lines = [f"{report['machine']}", "",
             "| collection | dense | BM25 | hybrid RRF | hybrid / dense | weighted w0.3 / 0.5 / 0.7 "
             "| issue 14: dense, BM25, RRF |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in report["collections"].items():
        by = {label: m["ndcg@10"] for label, m in entry["modes"].items()}
        lines.append(f"| {name} | {by['dense']:.4f} | {by['bm25']:.4f} | {by['rrf']:.4f} "
                     f"| {by['rrf'] / by['dense']:.3f}× | "
                     + " / ".join(f"{by[w]:.4f}" for w in ("w0.3", "w0.5", "w0.7")) + " | "
                     + ", ".join(f"{v:.4f}" for v in TARGETS.get(name, ())) + " |")
    lines += ["", "| collection | queries timed | text: dense → hybrid ms | vector: dense → hybrid ms "
              "| lexical ms | BM25 built / saved / loaded / after an add of 10 (s) |", "|---|---|---|---|---|---|"]
    for name, entry in report["collections"].items():
        ms = entry["latency_ms"]
        lines.append(f"| {name} | {entry['latency_queries']} | {ms['text_dense']:.2f} → {ms['text_hybrid']:.2f} "
                     f"(+{ms['hybrid_adds_text']:.2f}) | {ms['vector_dense']:.3f} → {ms['vector_hybrid']:.3f} "
                     f"(+{ms['hybrid_adds_vector']:.3f}) | {ms['lexical']:.3f} | "
                     f"{entry['lexical_build_seconds']:.2f} / {entry['lexical_save_seconds']:.2f} / "
                     f"{entry['lexical_load_seconds']:.3f} / {entry['lexical_extend_after_add_seconds']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
