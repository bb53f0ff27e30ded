"""Funnel search against FAISS on pkgsum (100k real MiniLM vectors, 1,000 queries).

One thread, same data, same run: exact search, several funnel plans, FAISS
IndexFlatIP, IVF1024,Flat and HNSW32; one query at a time and batched. Reports
recall@10 against exact search, QPS, resident bytes per vector, bytes read per
query and achieved GB/s, and the first stage's bandwidth against a plain numpy
reduction over the same number of contiguous bytes. Writes JSON and a PNG plot.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_funnel.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from common import ROOT, recall_at_10
from threadpoolctl import threadpool_limits

from matsearch import Collection, Plan
from matsearch.search import run_plan

PLANS = [
    "d384",
    "d64:400>d384",
    "d64:200>d384",
    "d32:3000>d64:300>d384",
    "d32:2000>d64:300>d384",
    "d32:2000>d64:200>d384",
    "d32:1000>d64:200>d384",
    "d32:800>d128:100>d384",
]


def timed(fn, queries, batched: bool):
    """(seconds per query, results) one query at a time, or for one batch of all."""
    fn(queries[:8]) if batched else fn(queries[0][None])
    start = time.perf_counter()
    out = [fn(queries)] if batched else [fn(q[None]) for q in queries]
    return (time.perf_counter() - start) / len(queries), out


def numpy_reduction_gbps(nbytes: int, repeats: int = 200) -> float:
    """Bandwidth of np.add.reduce over `nbytes` contiguous float32 bytes (the scan's limit)."""
    buffer = np.random.default_rng(0).random(nbytes // 4, dtype=np.float32)
    np.add.reduce(buffer)
    start = time.perf_counter()
    for _ in range(repeats):
        np.add.reduce(buffer)
    return nbytes * repeats / (time.perf_counter() - start) / 1e9


def bench_matsearch(col: Collection, queries, truth, plans, rows_of):
    store, transform = col._store, col._transform
    elastic = transform.apply(queries)
    out = []
    for text in plans:
        plan = Plan.parse(text)
        search = lambda q: run_plan(store, q, plan, 10)  # noqa: E731
        single, results = timed(search, elastic, batched=False)
        batch, _ = timed(search, elastic, batched=True)
        ids = np.vstack([r.ids for r in results])
        cost = results[0].cost.per_query()
        first = plan.stages[0]
        stage_seconds = sum(r.cost.stage_seconds[0] for r in results) / len(results)
        stage_bytes = store.count * (first.dim + 1) * 4  # the prefix block and the prefix norms
        row = {
            "method": f"matsearch {text}", "plan": text,
            "recall@10": recall_at_10(rows_of(ids), truth),
            "qps": 1 / single, "qps_batched": 1 / batch,
            "resident_bytes_per_vector": first.dim * 4 + 4,
            "multiply_adds": cost["multiply_adds"], "bytes_read": cost["bytes_read"],
            "gbps": cost["bytes_read"] / single / 1e9,
            "first_stage_bytes": stage_bytes, "first_stage_gbps": stage_bytes / stage_seconds / 1e9,
            "numpy_reduction_gbps": numpy_reduction_gbps(stage_bytes),
        }
        row["first_stage_vs_numpy"] = row["first_stage_gbps"] / row["numpy_reduction_gbps"]
        out.append(row)
        print_row(row)
    return out


def bench_faiss(name, index, params, queries, truth, resident):
    out = []
    for label, setter in params:
        setter(index)
        search = lambda q: index.search(q, 10)[1]  # noqa: E731
        single, results = timed(search, queries, batched=False)
        batch, _ = timed(search, queries, batched=True)
        row = {"method": f"faiss {name} {label}".strip(), "recall@10": recall_at_10(np.vstack(results), truth),
               "qps": 1 / single, "qps_batched": 1 / batch, "resident_bytes_per_vector": resident}
        out.append(row)
        print_row(row)
    return out


def print_row(row):
    extra = ""
    if "gbps" in row:
        extra = (f"  {row['bytes_read'] / 1e6:7.2f} MB/q {row['gbps']:6.1f} GB/s  stage-1 "
                 f"{row['first_stage_gbps']:5.1f} GB/s = {row['first_stage_vs_numpy']:.0%} of numpy")
    print(f"{row['method']:<42} recall@10 {row['recall@10']:.3f}  QPS {row['qps']:8.0f}  "
          f"batched {row['qps_batched']:8.0f}  {row['resident_bytes_per_vector']:6.0f} B/vec{extra}", flush=True)


def faiss_indexes(corpus):
    """(name, index, per-query settings, resident bytes/vector, build seconds) for the baselines."""
    n, dim = corpus.shape
    start = time.perf_counter()
    flat = faiss.IndexFlatIP(dim)
    flat.add(corpus)
    yield "IndexFlatIP", flat, [("", lambda i: None)], dim * 4, time.perf_counter() - start
    start = time.perf_counter()
    ivf = faiss.index_factory(dim, "IVF1024,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(corpus)
    ivf.add(corpus)
    probes = [(f"nprobe={p}", lambda i, p=p: setattr(i, "nprobe", p)) for p in (16, 32, 64)]
    yield "IVF1024,Flat", ivf, probes, dim * 4 + 8 + 1024 * dim * 4 / n, time.perf_counter() - start
    start = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.add(corpus)
    efs = [(f"efSearch={e}", lambda i, e=e: setattr(i.hnsw, "efSearch", e)) for e in (32, 64, 128)]
    graph = faiss.vector_to_array(hnsw.hnsw.neighbors).nbytes + faiss.vector_to_array(hnsw.hnsw.offsets).nbytes
    yield "HNSW32,Flat", hnsw, efs, dim * 4 + graph / n, time.perf_counter() - start


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for family, marker in (("matsearch", "o"), ("faiss IVF", "s"), ("faiss HNSW", "^"), ("faiss IndexFlat", "x")):
        pts = [r for r in rows if r["method"].startswith(family)]
        ax.plot([r["qps"] for r in pts], [r["recall@10"] for r in pts], marker, label=family, markersize=7)
        for r in pts:
            ax.annotate(r["method"].split(" ", 2)[-1], (r["qps"], r["recall@10"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("queries per second (1 thread, one query at a time)")
    ax.set_ylabel("recall@10 against exact search")
    ax.set_title("pkgsum: 100k MiniLM vectors, 384 dims")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def markdown_table(report: dict) -> str:
    """The README's table, from a report this script wrote."""
    lines = [
        "| method | recall@10 | QPS, one query at a time | QPS, batched | × our exact | resident B/vector "
        "| MB read/query | GB/s | first stage vs numpy scan |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        name = f"matsearch `{r['plan']}`" if "plan" in r else r["method"].replace("faiss", "FAISS")
        scan = "– | – | –"
        if "gbps" in r:
            scan = (f"{r['bytes_read'] / 1e6:.1f} | {r['gbps']:.1f} | {r['first_stage_vs_numpy']:.0%} "
                    f"({r['first_stage_gbps']:.1f} / {r['numpy_reduction_gbps']:.1f} GB/s)")
        lines.append(f"| {name} | {r['recall@10']:.3f} | {r['qps']:,.0f} | {r['qps_batched']:,.0f} | "
                     f"{r['speedup_vs_exact']:.1f} | {r['resident_bytes_per_vector']:,.0f} | {scan} |")
    builds = ", ".join(f"{name} {seconds:.1f}" for name, seconds in report["build_seconds"].items())
    return "\n".join(lines) + f"\n\nBuild time (s): {builds}\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pkgsum")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--plans", nargs="+", default=PLANS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = np.load(args.data / "corpus.minilm.f16.npy").astype(np.float32)
    queries = np.load(args.data / "queries.minilm.f16.npy").astype(np.float32)[: args.queries]
    faiss.omp_set_num_threads(1)
    rows, builds = [], {}
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        col = Collection.create(Path(tmp) / "pkgsum")
        col.add([str(i) for i in range(len(corpus))], vectors=corpus)
        builds["matsearch collection (PCA + store)"] = time.perf_counter() - start
        truth = run_plan(col._store, col._transform.apply(queries), Plan.exact(384), 10).ids
        rows += bench_matsearch(col, queries, truth, args.plans, rows_of=lambda ids: ids)
        col.close()
        for name, index, params, resident, build in faiss_indexes(corpus):
            builds[f"faiss {name}"] = build
            rows += bench_faiss(name, index, params, queries, truth, resident)
    exact_qps = next(r["qps"] for r in rows if r["method"] == "matsearch d384")
    for r in rows:
        r["speedup_vs_exact"] = r["qps"] / exact_qps
    best = max((r for r in rows if r["method"].startswith("matsearch") and r["recall@10"] >= 0.95),
               key=lambda r: r["qps"], default=None)
    report = {"data": str(args.data), "items": len(corpus), "queries": len(queries), "threads": 1,
              "faiss_version": faiss.__version__, "build_seconds": builds, "rows": rows,
              "best_funnel_at_recall_0.95": best}
    (args.out / "funnel_pkgsum.json").write_text(json.dumps(report, indent=2))
    (args.out / "funnel_pkgsum.md").write_text(markdown_table(report))
    plot(rows, args.out / "funnel_pkgsum.png")
    if best:
        print(f"\nbest funnel with recall@10 >= 0.95: {best['plan']}  {best['speedup_vs_exact']:.1f}x exact QPS")
    print(f"builds (s): {json.dumps({k: round(v, 1) for k, v in builds.items()})}")
    print(f"wrote funnel_pkgsum.json, .md and .png in {args.out}")


if __name__ == "__main__":
    main()
