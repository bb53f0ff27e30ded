"""matsearch's indexes against FAISS HNSW32 and IVF on pkgsum: the recall-vs-QPS frontier.

One thread, one query at a time, same data, same run. For every recipe: build
time, resident bytes per vector (the memory-mapped full-precision store that
only the final re-rank reads is reported apart), and recall@10 against exact
search and QPS over a sweep of per-query plans. FAISS indexes the normalised
original vectors (the collection's PCA transform is a rotation, so cosines are
the same); matsearch is timed on queries already in the collection's space, as
FAISS gets them, and the best plan once more through `Collection.search`.
Writes JSON, a markdown table and a PNG plot.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_indexes.py
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

from matsearch import Plan
from matsearch.recipe import GraphPart, Recipe
from matsearch.search import run_plan

TARGET = 0.95
GRAPH_SETTINGS = ((24, 24), (32, 24), (32, 32), (40, 32), (48, 32), (48, 40), (56, 40), (64, 48), (80, 64),
                  (96, 80), (128, 100))  # (beam, shortlist)
RECIPES = ("hnsw32@d192/int8", "hnsw32@d128:d192/int8", "hnsw32@d128", "ivf1024@d64:d128", "ivf1024@d64:d128/int8",
           "ivf1024@d64:d128/pq32")
IVF_SETTINGS = ((8, 64, 100), (16, 64, 150), (32, 64, 200), (16, 128, 100), (32, 128, 100), (64, 128, 100),
                (96, 128, 100), (128, 128, 100), (160, 128, 100))  # (lists probed, scan dim, shortlist)
HNSW_EFS = (16, 24, 32, 40, 48, 56, 64, 80, 96, 128)
IVF_PROBES = (8, 16, 32, 64, 128)


def faiss_hnsw(corpus, queries, truth) -> tuple[dict, list[dict]]:
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(corpus.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.add(corpus)
    build = time.perf_counter() - start
    hnsw = index.hnsw
    links = sum(faiss.vector_to_array(a).nbytes for a in (hnsw.neighbors, hnsw.offsets, hnsw.levels))
    resident = corpus.shape[1] * 4 + links / len(corpus)
    rows = []
    for ef in HNSW_EFS:
        hnsw.efSearch = ef
        rows.append(_faiss_row("faiss HNSW32,Flat", f"efSearch={ef}", index, queries, truth, resident))
    return {"recipe": "faiss HNSW32,Flat", "build_seconds": build, "resident_bytes_per_vector": resident}, rows


def faiss_ivf(corpus, queries, truth) -> tuple[dict, list[dict]]:
    start = time.perf_counter()
    index = faiss.index_factory(corpus.shape[1], "IVF1024,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(corpus)
    index.add(corpus)
    build = time.perf_counter() - start
    resident = corpus.shape[1] * 4 + 8 + 1024 * corpus.shape[1] * 4 / len(corpus)
    rows = []
    for nprobe in IVF_PROBES:
        index.nprobe = nprobe
        rows.append(_faiss_row("faiss IVF1024,Flat", f"nprobe={nprobe}", index, queries, truth, resident))
    return {"recipe": "faiss IVF1024,Flat", "build_seconds": build, "resident_bytes_per_vector": resident}, rows


def _faiss_row(recipe, setting, index, queries, truth, resident) -> dict:
    seconds, found = per_query_seconds(lambda q: index.search(q, 10)[1], queries)
    row = {"recipe": recipe, "setting": setting, "recall@10": recall_at_10(np.vstack(found), truth),
           "qps": 1 / seconds, "resident_bytes_per_vector": resident}
    _print(row)
    return row


def plans_for(recipe: str) -> list[str]:
    """The per-query plans swept for a recipe's index."""
    part = Recipe.parse(recipe).parts[0]
    if isinstance(part, GraphPart):
        return [f"g{ef}@d{part.dim}:{keep}>d384" for ef, keep in GRAPH_SETTINGS]
    dims = [ds for ds in {ds for _, ds, _ in IVF_SETTINGS} if ds <= part.scan_dim] if part.codec == "f32" \
        else [part.scan_dim]  # coded lists are scanned at their own dim only
    return [f"p{n}@d{ds}:{keep}>d384" for n, ds, keep in IVF_SETTINGS if ds in dims]


def matsearch_recipe(col, recipe, plans, elastic, truth) -> tuple[dict, list[dict]]:
    start = time.perf_counter()
    col.build(recipe)
    build = time.perf_counter() - start
    store, index = col._store, next(iter(col._indexes.values()))
    resident = index.resident_bytes() / store.count
    rows = []
    for text in plans:
        plan = Plan.parse(text)
        seconds, results = per_query_seconds(lambda q: run_plan(store, q, plan, 10, index=index), elastic)
        row = {"recipe": recipe, "setting": text, "recall@10": recall_at_10(np.vstack([r.ids for r in results]), truth),
               "qps": 1 / seconds, "resident_bytes_per_vector": resident,
               "multiply_adds": float(np.mean([r.cost.multiply_adds for r in results])),
               "bytes_read": float(np.mean([r.cost.bytes_read for r in results]))}
        rows.append(row)
        _print(row)
    return {"recipe": recipe, "build_seconds": build, "resident_bytes_per_vector": resident}, rows


def _print(row):
    print(f"{row['recipe']:<22} {row['setting']:<26} recall@10 {row['recall@10']:.3f}  QPS {row['qps']:7.0f}  "
          f"{row['resident_bytes_per_vector']:6.0f} B/vec", flush=True)


def best_at_target(rows, recipe):
    hits = [r for r in rows if r["recipe"] == recipe and r["recall@10"] >= TARGET]
    return max(hits, key=lambda r: r["qps"], default=None)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        pts = sorted((r for r in rows if r["recipe"] == recipe), key=lambda r: r["recall@10"])
        name = recipe if recipe.startswith("faiss") else f"matsearch {recipe}"
        ax.plot([r["recall@10"] for r in pts], [r["qps"] for r in pts], "s--" if name.startswith("faiss") else "o-",
                label=f"{name} ({pts[0]['resident_bytes_per_vector']:,.0f} B/vec)", markersize=4)
    ax.axvline(TARGET, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlim(0.8, 1.0)
    ax.set_xlabel("recall@10 against exact search")
    ax.set_ylabel("queries per second (1 thread, one query at a time)")
    ax.set_title("pkgsum: 100k MiniLM vectors, 384 dims")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def markdown(report) -> str:
    """The README's table: each recipe's best setting at the target recall, and its ratios to FAISS HNSW32."""
    lines = ["| recipe | build s | resident B/vec | best setting at recall@10 ≥ 0.95 | recall@10 | QPS "
             "| × HNSW32 QPS | × HNSW32 memory | × HNSW32 build |", "|---|---|---|---|---|---|---|---|---|"]
    ref = next(b for b in report["builds"] if b["recipe"] == "faiss HNSW32,Flat")
    ref_qps = report["best"][ref["recipe"]]["qps"]
    for b in report["builds"]:
        best = report["best"].get(b["recipe"])
        name = b["recipe"].replace("faiss", "FAISS") if b["recipe"].startswith("faiss") else f"matsearch `{b['recipe']}`"
        tail = "none reaches it | – | – | – " if best is None else \
            f"`{best['setting']}` | {best['recall@10']:.3f} | {best['qps']:,.0f} | {best['qps'] / ref_qps:.2f} "
        lines.append(f"| {name} | {b['build_seconds']:.1f} | {b['resident_bytes_per_vector']:,.0f} | {tail}"
                     f"| {b['resident_bytes_per_vector'] / ref['resident_bytes_per_vector']:.2f} "
                     f"| {b['build_seconds'] / ref['build_seconds']:.2f} |")
    lines.append(f"\nThe memory-mapped store the re-rank reads: {report['store_bytes_per_vector']:,.0f} B/vector on disk "
                 f"(not resident; a query touches only its shortlist's rows). Collection ingest (PCA fit + store): "
                 f"{report['ingest_seconds']:.1f} s.")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PKGSUM)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus, queries = load_vectors(args.data, args.queries)
    normalised = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    faiss.omp_set_num_threads(1)
    rows, builds = [], []
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        col, ingest = elastic_collection(Path(tmp) / "pkgsum", corpus)
        elastic = col._transform.apply(queries)
        truth = exact_top10(col, elastic)
        for build_faiss in (faiss_hnsw, faiss_ivf):
            build, found = build_faiss(normalised, queries, truth)
            builds.append(build)
            rows += found
        for recipe in args.recipes:
            build, found = matsearch_recipe(col, recipe, plans_for(recipe), elastic, truth)
            builds.append(build)
            rows += found
        best = {b["recipe"]: best_at_target(rows, b["recipe"]) for b in builds}
        store_bytes = sum(p.stat().st_size for p in (Path(tmp) / "pkgsum" / "vectors").iterdir()) / len(corpus)
        col.close()
    report = {"data": str(args.data), "items": len(corpus), "queries": len(queries), "threads": 1,
              "faiss_version": faiss.__version__, "ingest_seconds": ingest, "builds": builds, "rows": rows,
              "best": best, "store_bytes_per_vector": store_bytes}
    (args.out / "indexes_pkgsum.json").write_text(json.dumps(report, indent=2))
    (args.out / "indexes_pkgsum.md").write_text(markdown(report))
    plot(rows, args.out / "indexes_pkgsum.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
