"""Funnel search over a BlockStore: shortlist on a short prefix, re-rank on longer ones.

Each later stage adds only the dims it lacks to the partial inner products it
inherits, so a plan costs N·d₀ + Σ kᵢ·(dᵢ₊₁ − dᵢ) multiply-adds. A single-stage
plan is exact search, the reference every index is tested against. A first
stage that asks an index (IVF lists, a graph walk, PQ codes) re-ranks only the
candidates it returns (binary codes only shortlist).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from .errors import InvalidInputError
from .matryoshka import check_vectors
from .plan import INDEX_KINDS, Plan
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
    index=None,
) -> SearchResult:
    """Top-k stored rows for each query (float32, already in the store's space).

    `index` (an IVF, graph or PQ index built on `store`) is needed by plans whose first
    stage asks one for candidates; its kind must match the stage's.
    """
    if metric not in METRICS:
        raise InvalidInputError(f"metric {metric!r} is not one of {METRICS}")
    n_live = store.count - (0 if dead_rows is None else len(dead_rows))
    check_k(k, n_live)
    plan.check(store.dim)
    queries = check_vectors(queries, store.dim, what="queries")
    via = plan.stages[0].index
    if via is not None and getattr(index, "kind", None) != via:
        have = "none" if index is None else INDEX_KINDS.get(getattr(index, "kind", None), "another index")
        raise InvalidInputError(f"plan {plan} needs {INDEX_KINDS[via]}, but {have} was given")
    probing = via is not None
    keeps = plan.keeps(int(k), n_live)
    start = time.perf_counter()
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores_out = np.empty((len(queries), k), dtype=np.float32)
    cost = Cost(queries=len(queries), stage_seconds=[0.0] * len(plan.stages))
    scanned = np.zeros(len(plan.stages), dtype=np.int64)
    dead = _dead_mask(store.count, dead_rows) if probing else dead_rows
    chunk = max(1, _CHUNK_BYTES // max(store.count * _F32, 1))
    first = plan.stages[0].dim
    for lo in range(0, len(queries), chunk):
        block = queries[lo : lo + chunk]
        if not probing:
            scan_start = time.perf_counter()
            all_dots = store.dots(block[0], 0, first)[None, :] if len(block) == 1 else store.dots(block, 0, first)
            cost.items_scanned += store.count * len(block)
            cost.stage_seconds[0] += time.perf_counter() - scan_start
        for i, query in enumerate(block):
            if probing:
                rows, scores, dots = _candidates(store, index, query, plan.stages[0], keeps, dead, cost)
            else:
                rows, scores, dots = None, None, all_dots[i]
            top_rows, top = _funnel(store, query, rows, scores, dots, plan, keeps, metric, dead, cost, scanned,
                                    index)
            ids[lo + i], scores_out[lo + i] = top_rows, top
    cost.seconds = time.perf_counter() - start
    cost.candidates = [int(t) // len(queries) if t % len(queries) == 0 else t / len(queries) for t in scanned]
    return SearchResult(ids=ids, scores=scores_out, plan=str(plan), cost=cost)


def check_k(k, n_live: int) -> None:
    """k must be a whole number from 1 to the number of searchable items."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_live:
        raise InvalidInputError(f"k={k!r} is out of range: the collection holds {n_live} searchable items (1..{n_live})")


def _dead_mask(count: int, dead_rows: np.ndarray | None) -> np.ndarray | None:
    if dead_rows is None or not len(dead_rows):
        return None
    mask = np.zeros(count, dtype=bool)
    mask[dead_rows] = True
    return mask


def _candidates(store, index, query, stage, keeps, dead, cost):
    """Stage-0 rows from the index with their scores (and partial products, if it has them).

    Falls back to scanning everything when deletions leave fewer than k candidates.
    """
    start = time.perf_counter()
    if index.indexed_ != store.count:
        raise InvalidInputError(
            f"the index covers {index.indexed_} rows but the store holds {store.count}; extend it first"
        )
    rows, scores, dots = index.candidates(store, query, stage, keeps[0], cost)
    if dead is not None:
        live = ~dead[rows]
        rows, scores, dots = rows[live], scores[live], None if dots is None else dots[live]
    if len(rows) < keeps[-1] and index.kind == "h":  # rank every code instead (every list, with binary IVF)
        rows, scores, dots = index.candidates(store, query, replace(stage, effort=None), store.count, cost)
        if dead is not None:
            rows, scores = rows[~dead[rows]], scores[~dead[rows]]
        rows, scores = rows[: keeps[0]], scores[: keeps[0]]  # nearest first, as a shortlist
    elif len(rows) < keeps[-1]:
        rows, scores, dots = None, None, store.dots(query, 0, stage.dim)
        cost.items_scanned += store.count
        cost.multiply_adds += store.count * stage.dim
        cost.bytes_read += store.count * stage.dim * _F32
    cost.stage_seconds[0] += time.perf_counter() - start
    return rows, scores, dots


def _funnel(store, query, rows, scores, dots, plan, keeps, metric, dead, cost, scanned, index=None):
    """Run every stage for one query.

    Stage 0 arrives either as partial products `dots` of all rows (`rows` None,
    work not yet counted) or as an index's candidates `rows` with their ranking
    `scores` and, if the index has them, partial products (work counted by it).
    """
    done, last = plan.stages[0].dim, len(keeps) - 1
    for n, (stage, keep) in enumerate(zip(plan.stages, keeps)):
        stage_start = time.perf_counter()
        count = store.count if rows is None else len(rows)
        scanned[n] += count
        if stage.codec:  # approximate scores from the index's prefix copy in RAM; the store is not read
            scores, dots = index.rescore(query, rows, stage, cost), None
        else:
            if n > 0:
                fresh = dots is None  # the index ranked by its own scores: products start here
                width = stage.dim if fresh else stage.dim - done
                if width:
                    added = store.dots(query, 0 if fresh else done, stage.dim, rows)
                    dots = added if fresh else dots + added
            else:
                width = stage.dim if rows is None else 0
            cost.multiply_adds += count * width
            cost.bytes_read += count * width * _F32
            if n > 0 or scores is None:
                scores = _scores(store, dots, rows, stage.dim, metric, cost)
        done = stage.dim
        if rows is None and dead is not None:
            scores[dead] = -np.inf
        if n == last and metric == "cosine":  # a shortlist's ranking does not need the query's norm
            scores = scores * _inv_norm(query[:done])
        if n == last and rows is not None:  # ties go to the lower row, as in exact search
            pick = np.lexsort((rows, -scores))[:keep]
        else:
            pick = top_k(scores, min(keep, len(scores)), ordered=n == last)
        rows = pick if rows is None else rows[pick]
        scores = scores[pick]
        dots = None if dots is None else dots[pick]
        cost.stage_seconds[n] += time.perf_counter() - stage_start
    return rows, scores


def _scores(store, dots, rows, dim, metric, cost):
    """Ranking scores from partial products: cosine divides by the items' prefix norms."""
    if metric == "ip":
        return dots.copy() if rows is None else dots
    count = len(dots)
    cost.multiply_adds += count * store.norm_work(dim)
    cost.bytes_read += count * (1 + store.norm_work(dim)) * _F32
    return np.multiply(dots, store.inv_prefix_norms(dim, rows))


def _inv_norm(vector: np.ndarray) -> np.float32:
    norm = np.sqrt(np.dot(vector, vector))
    return np.float32(1.0 / norm if norm > 0 else 0.0)
