"""Prototype: would a per-query stopping rule on the graph's walk beat a fixed beam? (issue 13)

On pkgsum (100,000 × 384, PCA-rotated; its 1,000 real queries), an HNSW32 graph (faiss) on the 192-dim prefix,
its candidates re-ranked on 384 dims (the best 32 kept, recall@10 against exact search). The level-0 walk is
re-done in Python over faiss's own links, so that the rule deciding when to stop can be changed; the work
measure is the number of distances computed (faiss's own walk with the same beam computes the same number):

- `beam`: HNSW's own rule (efSearch): stop when the nearest unexpanded candidate is below the beam-th best;
- `patience`: a beam of 256, stopping once the best `watch` (32: the shortlist; 10: the answer) have not
  changed for `patience` expanded nodes in a row (the "patience" of early-termination papers);
- `margin`: a beam of 256, stopping when the nearest unexpanded candidate scores below the 32nd best by more
  than `margin` (a score gap, as the IVF fast scan's stopping margin).

It also reports the per-query oracle (each query the beam, from the list, that gives the lowest mean work at the
mean recall) and the work at which each query first reaches its own best recall (beam 256). No setting is fitted:
every rule's frontier is on the same queries, to see what a rule could win at best.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/proto_graph_stop.py   # ~5 minutes
"""

from __future__ import annotations

import heapq
import json

import faiss
import numpy as np
from common import ROOT

DATA = ROOT.parent / "shared" / "data" / "pkgsum"
DIM, KEEP, QUERIES = 192, 32, 500
BEAMS = (16, 24, 32, 48, 64, 96, 128, 256)


def main():
    faiss.omp_set_num_threads(1)
    corpus = np.load(DATA / "corpus.minilm.f16.npy").astype(np.float32)
    queries = np.load(DATA / "queries.minilm.f16.npy").astype(np.float32)[:QUERIES]
    axes = np.linalg.eigh(np.cov((corpus - corpus.mean(0)).T))[1][:, ::-1]
    corpus, queries = corpus @ axes, queries @ axes
    truth = np.argsort(-(queries @ corpus.T), axis=1)[:, :10]
    graph = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = 80
    graph.add(np.ascontiguousarray(corpus[:, :DIM]))
    walker = Walker(graph, np.ascontiguousarray(corpus[:, :DIM]))

    def frontier(rule, values, **options):
        rows = []
        for value in values:
            recall, work = np.zeros(len(queries)), np.zeros(len(queries))
            for n, query in enumerate(queries):
                found, work[n] = walker.walk(query[:DIM], rule=rule, value=value, **options)
                reranked = found[np.argsort(-(corpus[found] @ query))[:10]]
                recall[n] = len(set(reranked) & set(truth[n])) / 10
            rows.append({"rule": rule, "value": value, **options, "recall": recall.mean(), "distances": work.mean(),
                         "worst_10pct": np.sort(recall)[: len(recall) // 10].mean(), "per_query": (recall, work)})
            print(f"{rule} {value} {options}: recall@10 {recall.mean():.4f}, distances {work.mean():.0f}", flush=True)
        return rows

    beams = frontier("beam", BEAMS)
    rules = (frontier("patience", (8, 12, 16, 24, 32), watch=KEEP) + frontier("patience", (16, 24, 32, 48), watch=10)
             + frontier("margin", (0.01, 0.02, 0.03, 0.05)))
    recall = np.array([b["per_query"][0] for b in beams])
    work = np.array([b["per_query"][1] for b in beams])
    fixed = lambda target: float(np.interp(target, recall.mean(1), work.mean(1)))
    report = {"queries": len(queries), "dim": DIM, "keep": KEEP,
              "rules": [{**{k: v for k, v in r.items() if k != "per_query"},
                         "fixed_beam_distances_at_same_recall": fixed(r["recall"])} for r in beams + rules],
              "oracle": {str(t): oracle(recall, work, t) for t in (0.90, 0.95)},
              "fixed": {str(t): fixed(t) for t in (0.90, 0.95)},
              "own_best_recall": {"mean_recall": float(recall[-1].mean()),
                                  "distances": float(work[np.argmax(recall >= recall[-1], axis=0),
                                                          np.arange(recall.shape[1])].mean())}}
    out = ROOT / "benchmarks" / "results" / "proto_graph_stop_pkgsum.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    for r in report["rules"]:
        print(f"{r['rule']:>8} {r['value']:<5} watch {r.get('watch', '-'):<3} recall {r['recall']:.4f} distances "
              f"{r['distances']:.0f} (fixed beam at that recall: {r['fixed_beam_distances_at_same_recall']:.0f})")
    print(json.dumps({k: report[k] for k in ("oracle", "fixed", "own_best_recall")}))


def oracle(recall: np.ndarray, work: np.ndarray, target: float) -> float:
    """Mean work when each query takes the beam minimising work − λ·recall, λ the least meeting the target."""
    low, high = 0.0, 1e7
    for _ in range(60):
        middle = (low + high) / 2
        chosen = np.argmax(recall * middle - work, axis=0)
        low, high = (middle, high) if recall[chosen, np.arange(recall.shape[1])].mean() < target else (low, middle)
    chosen = np.argmax(recall * high - work, axis=0)
    return float(work[chosen, np.arange(recall.shape[1])].mean())


class Walker:
    """HNSW search over a faiss graph's links, with a choice of stopping rule on level 0."""

    def __init__(self, graph, vectors: np.ndarray):
        hnsw = graph.hnsw
        self.links = faiss.vector_to_array(hnsw.neighbors)
        self.offsets = faiss.vector_to_array(hnsw.offsets).astype(np.int64)
        self.bounds = faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int64)
        self.entry, self.top, self.vectors = hnsw.entry_point, hnsw.max_level, vectors

    def neighbours(self, node: int, level: int) -> np.ndarray:
        start = self.offsets[node]
        found = self.links[start + self.bounds[level] : start + self.bounds[level + 1]]
        return found[found >= 0]

    def walk(self, query: np.ndarray, *, rule: str, value, watch: int = KEEP) -> tuple[np.ndarray, int]:
        """(the best KEEP rows found, distances computed)."""
        node, best, work = self.entry, float(self.vectors[self.entry] @ query), 1
        for level in range(self.top, 0, -1):  # greedy descent, as faiss does
            moved = True
            while moved:
                near = self.neighbours(node, level)
                scores, moved = self.vectors[near] @ query, False
                work += len(near)
                if len(near) and scores.max() > best:
                    best, node, moved = float(scores.max()), int(near[np.argmax(scores)]), True
        beam = value if rule == "beam" else 256
        seen, frontier, found = {node}, [(-best, node)], [(best, node)]  # found: a min-heap of the best `beam`
        quiet = 0
        while frontier:
            score, node = heapq.heappop(frontier)
            if len(found) >= beam and -score < found[0][0]:
                break
            if rule == "margin" and len(found) >= KEEP and -score < heapq.nlargest(KEEP, found)[-1][0] - value:
                break
            near = [int(n) for n in self.neighbours(node, 0) if n not in seen]
            seen.update(near)
            bar = heapq.nlargest(watch, found)[-1][0] if len(found) >= watch else -np.inf
            changed = False
            for n, s in zip(near, (self.vectors[near] @ query).tolist() if near else []):
                if len(found) < beam or s > found[0][0]:
                    heapq.heappush(frontier, (-s, n))
                    heapq.heappush(found, (s, n))
                    if len(found) > beam:
                        heapq.heappop(found)
                    changed |= s > bar
            work += len(near)
            quiet = 0 if changed else quiet + 1
            if rule == "patience" and quiet >= value:
                break
        return np.array([n for _, n in heapq.nlargest(KEEP, found)]), work


if __name__ == "__main__":
    main()
