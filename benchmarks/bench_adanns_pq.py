"""AdANNS-PQ on pkgsum: PQ codes of M bytes on the best prefix against rigid PQ at 2M bytes.

Rigid PQ codes all 384 dims of the original (unrotated) vectors; AdANNS codes a
d-dim prefix of the PCA-elastic vectors, for each d that M divides. Reported:
recall@10 of the codes' own ranking against exact search, and after re-ranking
their top 100 on all 384 dims; and which prefix `best_prefix` picks from a sample
of the collection alone (no test queries). Writes JSON.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_adanns_pq.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from matsearch import BlockStore, Collection, Plan
from matsearch.index import PQIndex, best_prefix
from matsearch.search import run_plan

ROOT = Path(__file__).resolve().parents[1]
DIMS = (32, 64, 96, 128, 192, 384)


def recall_at_10(found, truth) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth)]))


def measure(store, index, queries, truth, label):
    """Recall of the codes alone and after re-ranking their top 100 on all dims."""
    alone = run_plan(store, queries, Plan.parse(f"q@d{index.dim}"), 10, index=index)
    reranked = run_plan(store, queries, Plan.parse(f"q@d{index.dim}:100>d384"), 10, index=index)
    row = {"codes": label, "bytes": index.code_bytes, "dim": index.dim, "opq": index.opq,
           "recall@10": recall_at_10(alone.ids, truth), "recall@10_rerank100": recall_at_10(reranked.ids, truth)}
    print(f"  {label:22s} recall@10 {row['recall@10']:.3f}   after re-rank of 100: {row['recall@10_rerank100']:.3f}",
          flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "pkgsum")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--bytes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--opq", action="store_true", help="also OPQ (slower to train)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = np.load(args.data / "corpus.minilm.f16.npy").astype(np.float32)
    queries = np.load(args.data / "queries.minilm.f16.npy").astype(np.float32)
    faiss.omp_set_num_threads(2)
    rows, picks = [], {}
    with threadpool_limits(2), tempfile.TemporaryDirectory() as tmp:
        col = Collection.create(Path(tmp) / "pkgsum")
        col.add([str(i) for i in range(len(corpus))], vectors=corpus)
        store, elastic = col._store, col._transform.apply(queries)
        truth = run_plan(store, elastic, Plan.exact(384), 10).ids
        rigid_store = BlockStore.create(Path(tmp) / "rigid", [384])
        rigid_store.append(corpus / np.linalg.norm(corpus, axis=1, keepdims=True))
        for m in sorted(set(args.bytes) | {2 * b for b in args.bytes}):
            for opq in (False, True) if args.opq else (False,):
                start = time.perf_counter()
                rigid = PQIndex(dim=384, code_bytes=m, opq=opq).build(rigid_store)
                print(f"{'O' if opq else ''}PQ{m}: rigid built in {time.perf_counter() - start:.1f}s", flush=True)
                rows.append(measure(rigid_store, rigid, queries, truth, f"rigid {'O' if opq else ''}PQ{m} d384")
                            | {"rigid": True})
                if m not in args.bytes:
                    continue
                for dim in (d for d in DIMS if d % m == 0):
                    index = PQIndex(dim=dim, code_bytes=m, opq=opq).build(store)
                    label = f"AdANNS {'O' if opq else ''}PQ{m} d{dim}"
                    rows.append(measure(store, index, elastic, truth, label) | {"rigid": False})
                picks[f"{'O' if opq else ''}PQ{m}"] = best_prefix(store, m, dims=[d for d in DIMS if d % m == 0],
                                                                 opq=opq, sample=1000)
                print(f"  best_prefix picks d{picks[f'{chr(79) if opq else str()}PQ{m}'][0]} from a sample",
                      flush=True)
        col.close()
    summary = []
    for m in args.bytes:
        for opq in (False, True) if args.opq else (False,):
            tag = f"{'O' if opq else ''}PQ"
            ours = [r for r in rows if not r["rigid"] and r["bytes"] == m and r["opq"] == opq]
            best = max(ours, key=lambda r: r["recall@10"])
            rigid2 = next(r for r in rows if r["rigid"] and r["bytes"] == 2 * m and r["opq"] == opq)
            summary.append({"budget": f"{tag}{m}", "best_prefix": best, "rigid_at_2x": rigid2,
                            "picked_from_sample": picks[f"{tag}{m}"][0]})
            print(f"{tag}{m}: best prefix d{best['dim']} recall@10 {best['recall@10']:.3f} "
                  f"(re-ranked {best['recall@10_rerank100']:.3f}) vs rigid {tag}{2 * m} "
                  f"{rigid2['recall@10']:.3f} (re-ranked {rigid2['recall@10_rerank100']:.3f}); "
                  f"best_prefix picked d{picks[f'{tag}{m}'][0]}")
    (args.out / "adanns_pq_pkgsum.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
