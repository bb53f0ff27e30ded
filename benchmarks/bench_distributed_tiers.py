"""The single-node figures the scale-out model (README, Scale-out on Ray) is computed from: each tier at 1M items.

One local collection of bench_distributed.py's 1M items (pkgsum replicated with noise), each tier's recipe built
on it in turn and searched with its plan: RAM per item of the index, disk per item, ms per query one at a time
and in a batch of 1,000, one thread (as a shard actor runs), recall@10 against exact search over all items.
Writes benchmarks/results/distributed_tiers.json and .md.

    .venv/bin/python benchmarks/bench_distributed_tiers.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import faiss
import numpy as np
from bench_distributed import exact_truth, one_at_a_time, replicated
from common import PKGSUM, ROOT, load_vectors, recall_at_10
from threadpoolctl import threadpool_limits

from matsearch import Collection

TIERS = [  # (tier, recipe, plan)
    ("float prefix graph", "hnsw32@d128:d192/int8", "g56@d192:40>d384"),
    ("IVF-int8", "ivf1024@d64:d128/int8", "p64@d128:200>d384"),
    ("IVF-PQ", "ivf1024@d64:d128/pq64x4fs", "p32@d128:200>d384"),
    ("binary codes", "bin64/itq+ivf1024@d64", "h128@b64:3000>d128:200>d384"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/matsearch-distributed"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distributed_tiers")
    args = parser.parse_args()
    vectors = replicated(args.folder / f"vectors-{args.items}.npy", args.items)
    queries = load_vectors(PKGSUM, 1000)[1]
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = exact_truth(vectors, queries[:200])
    path = args.folder / "tiers"
    shutil.rmtree(path, ignore_errors=True)
    ids = np.char.zfill(np.arange(len(vectors)).astype(str), 10).tolist()
    faiss.omp_set_num_threads(1)
    rows = []
    with Collection.create(path, model=None) as col, threadpool_limits(1):
        for lo in range(0, len(vectors), 100_000):
            col.add(ids[lo : lo + 100_000], vectors=np.asarray(vectors[lo : lo + 100_000]))
        for tier, recipe, plan in TIERS:
            start = time.perf_counter()
            col.build(recipe)
            built = time.perf_counter() - start
            col.search(queries[:10], k=10, plan=plan)
            start = time.perf_counter()
            col.search(queries, k=10, plan=plan)
            batch = (time.perf_counter() - start) / len(queries)
            single, results = one_at_a_time(lambda q: col.search(q, k=10, plan=plan), queries[:200])
            info = col.info(plan)
            rows.append({"tier": tier, "recipe": recipe, "plan": plan, "build_seconds": built,
                         "batch_ms": batch * 1e3, "single_ms": single * 1e3,
                         "recall@10": recall_at_10(np.vstack([r.ids for r in results]), truth),
                         "index_bytes_per_vector": info["index_bytes_per_vector"],
                         "on_disk_bytes_per_vector": info["on_disk_bytes_per_vector"],
                         "store_bytes_per_vector": info["store_bytes_per_vector"]})
            print(json.dumps(rows[-1]), flush=True)
    shutil.rmtree(path, ignore_errors=True)
    args.out.with_suffix(".json").write_text(json.dumps({"items": args.items, "tiers": rows}, indent=2))
    lines = [f"{args.items:,} items (pkgsum replicated with noise), one local collection, one thread, k=10:", "",
             "| tier | recipe | plan | recall@10 | ms/query (one) | ms/query (batch of 1,000) | index RAM B/item | "
             "disk B/item | build s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tier']} | `{r['recipe']}` | `{r['plan']}` | {r['recall@10']:.3f} | {r['single_ms']:.2f} | "
                     f"{r['batch_ms']:.3f} | {r['index_bytes_per_vector']:.1f} | {r['on_disk_bytes_per_vector']:,.0f} | "
                     f"{r['build_seconds']:.0f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
