"""Flat codes, binary IVF and a prefix copy in RAM on the 1M-item collection of bench_scale.

ITQ codes (quick to fit) of 64 and 128 bits over the same store; each variant is
timed one query at a time on one thread, with recall@10 against exact search on
all 384 dims, the bytes it holds in RAM per item and the bytes it reads from the
memory-mapped store per query (from the cost records). Writes
benchmarks/results/tiers.{json,md}.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_tiers.py --collection /tmp/matsearch-scale/1000000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import faiss
import numpy as np
from common import PKGSUM, ROOT, per_query_seconds, recall_at_10
from threadpoolctl import threadpool_limits

from matsearch import Collection, Plan, run_plan
from matsearch.index import BinaryIndex

VARIANTS = {  # index settings → plans
    "bin64/itq": (dict(bits=64), ["h@b64:1000>d128:100>d384", "h@b64:3000>d128:200>d384"]),
    "bin64/itq+ivf1024@d64": (dict(bits=64, lists=1024, centroid_dim=64),
                              ["h64@b64:1000>d128:100>d384", "h128@b64:3000>d128:200>d384"]),
    "bin64/itq+int8@d32": (dict(bits=64, copy=("int8", 32)),
                           ["h@b64:3000>d32/int8:200>d384", "h@b64:6000>d32/int8:300>d384"]),
    "bin128/itq": (dict(bits=128), ["h@b128:1000>d128:100>d384", "h@b128:2000>d128:200>d384"]),
    "bin128/itq+int8@d64": (dict(bits=128, copy=("int8", 64)), ["h@b128:2000>d64/int8:200>d384"]),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", type=Path, default=Path("/tmp/matsearch-scale/1000000"))
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    col = Collection.open(args.collection)
    store = col._store
    raw = np.load(PKGSUM / "queries.minilm.f16.npy")[: args.queries].astype(np.float32)
    queries = col.transform.apply(raw)
    truth = run_plan(store, queries, Plan.exact(store.dim), 10).ids
    faiss.omp_set_num_threads(1)
    rows = []
    for name, (settings, plans) in VARIANTS.items():
        index = BinaryIndex(method="itq", **settings).build(store, progress=True)
        with threadpool_limits(1):
            for text in plans:
                plan = Plan.parse(text)
                seconds, found = per_query_seconds(lambda q: run_plan(store, q, plan, 10, index=index).ids[0], queries)
                cost = run_plan(store, queries, plan, 10, index=index).cost.per_query()
                in_ram = cost["items_scanned"] * 8 * (settings["bits"] // 64)
                if "lists" in settings:  # centroids, and the row numbers of the shortlist
                    in_ram += 4 * settings["lists"] * settings["centroid_dim"] + 4 * cost["candidates"][0]
                if "copy" in settings:
                    in_ram += cost["candidates"][1] * settings["copy"][1]  # int8: one byte per dim
                rows.append({"recipe": name, "plan": text, "recall": recall_at_10(found, truth), "ms": seconds * 1e3,
                             "ram_bytes_per_item": index.resident_bytes() / store.count,
                             "store_bytes_per_query": cost["bytes_read"] - in_ram})
                print(rows[-1], flush=True)
    out = ROOT / "benchmarks" / "results" / "tiers.json"
    out.write_text(json.dumps(rows, indent=2))
    lines = [f"{store.count:,} items (pkgsum replicated with noise), {len(queries)} queries, one thread:", "",
             "| recipe | plan | recall@10 | ms/query | RAM B/item | store bytes read/query |", "|---|---|---|---|---|---|"]
    lines += [f"| `{r['recipe']}` | `{r['plan']}` | {r['recall']:.3f} | {r['ms']:.2f} | {r['ram_bytes_per_item']:.1f} | "
              f"{r['store_bytes_per_query'] / 1024:,.0f} KiB |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
