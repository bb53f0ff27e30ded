"""What every benchmark shares: pkgsum, its elastic collection, recall and one-query-at-a-time timing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from matsearch import Collection, Plan
from matsearch.search import run_plan

ROOT = Path(__file__).resolve().parents[1]
PKGSUM = ROOT.parent / "shared" / "data" / "pkgsum"


def load_vectors(folder: Path, queries: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(corpus, queries) MiniLM vectors of a shared collection, as float32."""
    corpus = np.load(folder / "corpus.minilm.f16.npy").astype(np.float32)
    found = np.load(folder / "queries.minilm.f16.npy").astype(np.float32)
    return corpus, found[:queries]


def elastic_collection(folder: Path, corpus: np.ndarray) -> tuple[Collection, float]:
    """A collection in `folder` holding `corpus` (PCA-elastic), and the seconds it took."""
    start = time.perf_counter()
    col = Collection.create(folder)
    col.add([str(i) for i in range(len(corpus))], vectors=corpus)
    return col, time.perf_counter() - start


def exact_top10(col: Collection, elastic_queries: np.ndarray) -> np.ndarray:
    return run_plan(col._store, elastic_queries, Plan.exact(col.dim), 10).ids


def recall_at_10(found, truth) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth)]))


def per_query_seconds(search, queries, rounds: int = 3) -> tuple[float, list]:
    """Seconds per query of `search` called on one query at a time, the best of `rounds` passes
    (this VM's speed drifts by tens of percent), and the results of the last pass."""
    search(queries[:1])
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        results = [search(queries[i : i + 1]) for i in range(len(queries))]
        best = min(best, (time.perf_counter() - start) / len(queries))
    return best, results
