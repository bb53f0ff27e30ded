"""AdANNS-IVF against rigid IVF on pkgsum: recall@10 against multiply-adds per query.

Centroids are learned on a d_c-dim prefix of the PCA-elastic vectors; a query
probes nprobe lists, scans them on a d_s-dim prefix, keeps a shortlist and
re-ranks it on all 384 dims. Rigid IVF clusters and scans on all 384 dims.
Every cost is read from the engine's cost records. Writes JSON and a plot.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_adanns_ivf.py
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
from matsearch.index import IVFIndex
from matsearch.search import run_plan

RIGID_PROBES = (4, 8, 16, 32, 64, 128)
ADANNS_PROBES = RIGID_PROBES + (256,)  # a cheap scan dim affords more lists




def frontier_wins(rows):
    """For each rigid point, the best AdANNS recall at no more multiply-adds, and the least
    multiply-adds at no less recall."""
    adanns = [r for r in rows if not r["rigid"]]
    out = []
    for rigid in (r for r in rows if r["rigid"]):
        cheaper = [r for r in adanns if r["multiply_adds"] <= rigid["multiply_adds"]]
        better = [r for r in adanns if r["recall@10"] >= rigid["recall@10"]]
        best = max(cheaper, key=lambda r: r["recall@10"], default=None)
        least = min(better, key=lambda r: r["multiply_adds"], default=None)
        out.append({"rigid": rigid, "best_at_equal_cost": best, "cheapest_at_equal_recall": least})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pkgsum")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--lists", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = np.load(args.data / "corpus.minilm.f16.npy").astype(np.float32)
    queries = np.load(args.data / "queries.minilm.f16.npy").astype(np.float32)[: args.queries]
    faiss.omp_set_num_threads(1)
    rows = []
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        col = Collection.create(Path(tmp) / "pkgsum")
        col.add([str(i) for i in range(len(corpus))], vectors=corpus)
        store, elastic = col._store, col._transform.apply(queries)
        truth = run_plan(store, elastic, Plan.exact(384), 10).ids
        for dc in (32, 64, 128, 384):
            start = time.perf_counter()
            index = IVFIndex(n_lists=args.lists, centroid_dim=dc, scan_dim=384).build(store)
            print(f"IVF{args.lists} on d{dc}: built in {time.perf_counter() - start:.1f}s", flush=True)
            for ds in (32, 64, 128, 384):
                rigid = dc == 384 and ds == 384
                for nprobe in RIGID_PROBES if rigid else ADANNS_PROBES:
                    text = f"p{nprobe}@d{ds}" if ds == 384 else f"p{nprobe}@d{ds}:100>d384"
                    result = run_plan(store, elastic, Plan.parse(text), 10, index=index)
                    row = {"centroid_dim": dc, "scan_dim": ds, "nprobe": nprobe, "plan": text, "rigid": rigid,
                           "recall@10": recall_at_10(result.ids, truth),
                           "multiply_adds": result.cost.multiply_adds / len(elastic),
                           "items_scanned": result.cost.items_scanned / len(elastic)}
                    rows.append(row)
                    print(f"  d_c {dc:3d} d_s {ds:3d} nprobe {nprobe:3d}  recall@10 {row['recall@10']:.3f}  "
                          f"{row['multiply_adds'] / 1e6:6.2f} M multiply-adds", flush=True)
        col.close()
    wins = frontier_wins(rows)
    for w in wins:
        r, b, c = w["rigid"], w["best_at_equal_cost"], w["cheapest_at_equal_recall"]
        line = f"rigid nprobe {r['nprobe']:3d}: recall {r['recall@10']:.3f} at {r['multiply_adds'] / 1e6:.2f} M"
        if b:
            line += f" | AdANNS at ≤ that cost: {b['recall@10']:.3f} (d_c {b['centroid_dim']}, {b['plan']})"
        if c:
            line += (f" | AdANNS at ≥ that recall: {c['multiply_adds'] / 1e6:.2f} M "
                     f"({r['multiply_adds'] / c['multiply_adds']:.1f}x less; d_c {c['centroid_dim']}, {c['plan']})")
        print(line)
    (args.out / "adanns_ivf_pkgsum.json").write_text(json.dumps({"rows": rows, "wins": wins}, indent=2))
    plot(rows, args.out / "adanns_ivf_pkgsum.png")


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for dc in sorted({r["centroid_dim"] for r in rows}):
        pts = sorted((r for r in rows if r["centroid_dim"] == dc and not r["rigid"]), key=lambda r: r["multiply_adds"])
        ax.scatter([r["multiply_adds"] for r in pts], [r["recall@10"] for r in pts], s=14, label=f"AdANNS d_c={dc}")
    rigid = sorted((r for r in rows if r["rigid"]), key=lambda r: r["multiply_adds"])
    ax.plot([r["multiply_adds"] for r in rigid], [r["recall@10"] for r in rigid], "k-o", label="rigid IVF (384/384)")
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds per query")
    ax.set_ylabel("recall@10 against exact search")
    ax.set_title("AdANNS-IVF vs rigid IVF, pkgsum 100k, IVF1024")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


if __name__ == "__main__":
    main()
