"""Funnel search over a BlockStore: shortlist on a short prefix, re-rank on longer ones.

Each later stage adds only the dims it lacks to the partial inner products it
inherits, so a plan costs N·d₀ + Σ kᵢ·(dᵢ₊₁ − dᵢ) multiply-adds. A single-stage
plan is exact search, the reference every index is tested against.
"""

from __future__ import annotations

import time

import numpy as np

from .errors import InvalidInputError
from .matryoshka import check_vectors
from .plan import Plan
from .results import Cost, SearchResult
from .store import BlockStore
from .topk import top_k

METRICS = ("cosine", "ip")
_CHUNK_BYTES = 64 << 20  # bound on the stage-0 score matrix of a query batch
_F32 = 4


def run_plan(
    store: BlockStore,
    queries: np.ndarray,
    plan: Plan,
    k: int,
    *,
    metric: str = "cosine",
    dead_rows: np.ndarray | None = None,
) -> SearchResult:
    """Top-k stored rows for each query (float32, already in the store's space)."""
    if metric not in METRICS:
        raise InvalidInputError(f"metric {metric!r} is not one of {METRICS}")
    n_live = store.count - (0 if dead_rows is None else len(dead_rows))
    check_k(k, n_live)
    plan.check(store.dim)
    queries = check_vectors(queries, store.dim, what="queries")
    keeps = plan.keeps(int(k), n_live)
    start = time.perf_counter()
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=np.float32)
    cost = Cost(queries=len(queries), stage_seconds=[0.0] * len(plan.stages))
    chunk = max(1, _CHUNK_BYTES // max(store.count * _F32, 1))
    first = plan.stages[0].dim
    for lo in range(0, len(queries), chunk):
        block = queries[lo : lo + chunk]
        scan_start = time.perf_counter()
        dots = store.dots(block[0], 0, first)[None, :] if len(block) == 1 else store.dots(block, 0, first)
        cost.stage_seconds[0] += time.perf_counter() - scan_start
        for i, query in enumerate(block):
            rows, top = _funnel(store, query, dots[i], plan, keeps, metric, dead_rows, cost)
            ids[lo + i], scores[lo + i] = rows, top
    cost.seconds = time.perf_counter() - start
    cost.candidates = [store.count] + keeps[:-1]
    return SearchResult(ids=ids, scores=scores, plan=str(plan), cost=cost)


def check_k(k, n_live: int) -> None:
    """k must be a whole number from 1 to the number of searchable items."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_live:
        raise InvalidInputError(f"k={k!r} is out of range: the collection holds {n_live} searchable items (1..{n_live})")


def _funnel(store, query, dots, plan, keeps, metric, dead_rows, cost):
    """Run every stage for one query; `dots` are its stage-0 partial products."""
    rows, done, last = None, 0, len(keeps) - 1
    for n, (stage, keep) in enumerate(zip(plan.stages, keeps)):
        stage_start = time.perf_counter()
        width = stage.dim - done
        scanned = store.count if rows is None else len(rows)
        if rows is not None:
            dots = dots + store.dots(query, done, stage.dim, rows)
        done = stage.dim
        cost.multiply_adds += scanned * width
        cost.bytes_read += scanned * width * _F32
        if metric == "cosine":
            scores = np.multiply(dots, store.inv_prefix_norms(done, rows))
            if n == last:  # a shortlist's ranking does not need the query's norm
                scores *= _inv_norm(query[:done])
            cost.multiply_adds += scanned * store.norm_work(done)
            cost.bytes_read += scanned * (1 + store.norm_work(done)) * _F32
        else:
            scores = dots.copy() if rows is None else dots
        if rows is None and dead_rows is not None and len(dead_rows):
            scores[dead_rows] = -np.inf
        if n == last and rows is not None:  # ties go to the lower row, as in exact search
            pick = np.lexsort((rows, -scores))[:keep]
        else:
            pick = top_k(scores, keep, ordered=n == last)
        rows = pick if rows is None else rows[pick]
        dots, scores = dots[pick], scores[pick]
        cost.stage_seconds[n] += time.perf_counter() - stage_start
    return rows, scores


def _inv_norm(vector: np.ndarray) -> np.float32:
    norm = np.linalg.norm(vector)
    return np.float32(1.0 / norm if norm > 0 else 0.0)
