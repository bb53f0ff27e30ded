"""Funnel search over a BlockStore: shortlist on a short prefix, re-rank on longer ones.

Each later stage adds only the dims it lacks to the partial inner products it
inherits, so a plan costs N·d₀ + Σ kᵢ·(dᵢ₊₁ − dᵢ) multiply-adds. A single-stage
plan is exact search, the reference every index is tested against. A first
stage that asks an index (IVF lists, a graph walk, PQ codes) re-ranks only the
candidates it returns (binary codes only shortlist).

Scores are higher-is-better for every metric: "cosine", "ip" (the inner product) and "l2", whose
final score is minus the squared Euclidean distance on the last stage's prefix, −‖q − x‖² (so the
nearest item comes first). On a prefix the distance is ‖q‖² + ‖x‖² − 2 q·x: shortlists rank by
2 q·x − ‖x‖² with the stored prefix norms, and the last stage subtracts the query's ‖q‖².
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from .errors import InvalidInputError
from .matryoshka import check_vectors
from .plan import INDEX_KINDS, Plan, Stage
from .results import Cost, SearchResult
from .store import BlockStore
from .topk import top_k

METRICS = ("cosine", "ip", "l2")
_CHUNK_BYTES = 64 << 20  # bound on the stage-0 score matrix of a query batch
_F32 = 4
_CANDIDATE_BYTES = 32  # per candidate in a batch: row and list position, score, partial product, norm
_NO_ROW = np.iinfo(np.int64).max  # sorts padding after every row


def run_plan(
    store: BlockStore,
    queries: np.ndarray,
    plan: Plan,
    k: int,
    *,
    metric: str = "cosine",
    dead_rows: np.ndarray | None = None,
    dead_mask: np.ndarray | None = None,
    index=None,
) -> SearchResult:
    """Top-k stored rows for each query (float32, already in the store's space).

    Deleted rows are given either as `dead_rows` (row numbers) or as `dead_mask` (a boolean
    per stored row, which a caller can keep from one search to the next). `index` (an IVF,
    graph, PQ or binary-code index built on `store`) is needed by plans whose first stage
    asks one for candidates; its kind must match the stage's. A batch of queries runs
    batched kernels end to end (see `_run_batch`); one query runs the one-query path.
    """
    if metric not in METRICS:
        raise InvalidInputError(f"metric {metric!r} is not one of {METRICS}")
    n_dead, dead_rows, dead_mask = _deletions(store.count, dead_rows, dead_mask)
    check_k(k, store.count - n_dead)
    plan.check(store.dim)
    queries = check_vectors(queries, store.dim, what="queries")
    return run_checked(store, queries, plan, k, metric, n_dead, dead_rows, dead_mask, index)


def run_checked(store: BlockStore, queries: np.ndarray, plan: Plan, k: int, metric: str, n_dead: int,
                dead_rows: np.ndarray | None, dead_mask: np.ndarray | None, index) -> SearchResult:
    """`run_plan` for a caller that has checked the metric, k, the plan's dims and the queries (float32,
    C-contiguous, 2-D) and counted the `n_dead` rows given by `dead_rows` or `dead_mask` (not both)."""
    n_live = store.count - n_dead
    via = plan.stages[0].index
    if via is not None and getattr(index, "kind", None) != via:
        have = "none" if index is None else INDEX_KINDS.get(getattr(index, "kind", None), "another index")
        raise InvalidInputError(f"plan {plan} needs {INDEX_KINDS[via]}, but {have} was given")
    if via is not None and index.indexed_ != store.count:
        raise InvalidInputError(
            f"the index covers {index.indexed_} rows but the store holds {store.count}; extend it first"
        )
    probing = via is not None
    keeps = plan.keeps(int(k), n_live)
    start = time.perf_counter()
    cost = Cost(queries=len(queries), stage_seconds=[0.0] * len(plan.stages))
    scanned = [0] * len(plan.stages)
    if probing:  # index candidates are checked against a mask, a full scan's scores at the dead rows
        dead = dead_mask if dead_mask is not None or not n_dead else _dead_mask(store.count, dead_rows)
    else:
        dead = dead_rows if dead_mask is None else np.flatnonzero(dead_mask)
    # an index asked for keeps[0] candidates also returns deleted rows: ask for more by the dead share, then keep
    # the first keeps[0] live ones, so a shortlist of every live row stays exhaustive (equal to exact search)
    asked = min(store.count, -(-keeps[0] * store.count // n_live)) if n_dead else keeps[0]
    fused = probing and len(queries) == 1 and dead is None and getattr(index, "search_one", None)
    found = fused and fused(store, queries[0], plan, keeps, metric, cost)  # the whole funnel in one compiled call
    if found:
        ids, scores_out, scanned = found[0][None], found[1][None], found[2]
    elif probing and len(queries) == 1:  # one query through an index, kept lean: each call here shows in its latency
        query = queries[0]
        rows, scores, dots = _candidates(store, index, query, plan.stages[0], keeps, dead, cost, asked)
        ids, scores_out, _ = _funnel(store, query, rows, scores, dots, plan, keeps, metric, dead, cost, scanned, index)
        ids, scores_out = ids[None], scores_out[None]
    else:
        ids = np.empty((len(queries), k), dtype=np.int64)
        scores_out = np.empty((len(queries), k), dtype=np.float32)
        run = Run(store, plan, keeps, metric, dead, index, cost, scanned, asked)
        if len(queries) > 1 and (probing or len(plan.stages) > 1):
            _run_batch(run, queries, ids, scores_out)
        else:
            _run_one_by_one(run, queries, ids, scores_out)
    cost.seconds = time.perf_counter() - start
    cost.candidates = [t // len(queries) if t % len(queries) == 0 else t / len(queries) for t in scanned]
    return SearchResult(ids=ids, scores=scores_out, plan=plan.text, cost=cost)


@dataclass(slots=True)
class Run:
    """What every stage of one `run_plan` call shares; `cost` and `scanned` are added to."""

    store: BlockStore
    plan: Plan
    keeps: list[int]
    metric: str
    dead: np.ndarray | None  # a mask over rows when an index gives candidates, else dead row numbers
    index: object
    cost: Cost
    scanned: list[int]  # candidates scored by each stage, all queries together
    asked: int  # candidates asked of an index: keeps[0], more when rows are deleted


def _run_one_by_one(run: Run, queries, ids, scores_out) -> None:
    """The one-query path: each query's funnel on its own (a full scan's products come from one GEMM)."""
    store, plan, keeps, cost = run.store, run.plan, run.keeps, run.cost
    probing = plan.stages[0].index is not None
    chunk = max(1, _CHUNK_BYTES // max(store.count * _F32, 1))
    first = plan.stages[0].dim
    for lo in range(0, len(queries), chunk):
        block = queries[lo : lo + chunk]
        if not probing:
            all_dots = _scan_all(store, block, first, cost)
        for i, query in enumerate(block):
            if probing:
                rows, scores, dots = _candidates(store, run.index, query, plan.stages[0], keeps, run.dead, cost,
                                                 run.asked)
            else:
                rows, scores, dots = None, None, all_dots[i]
            top_rows, top, _ = _funnel(store, query, rows, scores, dots, plan, keeps, run.metric, run.dead, cost,
                                       run.scanned, run.index)
            ids[lo + i], scores_out[lo + i] = top_rows, top


def _scan_all(store, block, dim, cost) -> np.ndarray:
    """Partial products of a block of queries with every row on the first `dim` dims (one GEMM)."""
    scan_start = time.perf_counter()
    all_dots = store.dots(block[0], 0, dim)[None, :] if len(block) == 1 else store.dots(block, 0, dim)
    cost.items_scanned += store.count * len(block)
    cost.stage_seconds[0] += time.perf_counter() - scan_start
    return all_dots


def _run_batch(run: Run, queries, ids, scores_out) -> None:
    """Many queries through batched kernels, a chunk at a time: stage 0 as one GEMM over every row
    (then each query's shortlist taken from its row of products) or one index call for the chunk,
    then each later stage for the whole chunk at once (`_funnel_batch`). Gives what the one-query
    path gives (ties aside) and counts the same work."""
    stage, store = run.plan.stages[0], run.store
    if stage.index is None:
        chunk = max(1, _CHUNK_BYTES // max(store.count * _F32, 1))
    else:  # bound the (queries × candidates) arrays: rows, scores, products
        chunk = max(1, _CHUNK_BYTES // (_CANDIDATE_BYTES * run.index.candidate_width(stage, run.keeps[0])))
    for lo in range(0, len(queries), chunk):
        block = queries[lo : lo + chunk]
        if stage.index is None:
            at, (rows, scores, dots), start = np.arange(len(block)), _shortlist_scan(run, block), 1
        else:
            at, rows, scores, dots = _candidates_batch(run, block, ids[lo:], scores_out[lo:])
            start = 0
        if len(at):
            ids[lo + at], scores_out[lo + at] = _funnel_batch(run, block[at], rows, scores, dots, start)


def _shortlist_scan(run: Run, block):
    """Stage 0 of a full-scan funnel for a block of queries: their products with every row (one
    GEMM), then each query's shortlist from its row; (queries × keep) rows, scores, products."""
    all_dots = _scan_all(run.store, block, run.plan.stages[0].dim, run.cost)
    kept = [_funnel(run.store, query, None, None, all_dots[i], run.plan, run.keeps, run.metric, run.dead, run.cost,
                    run.scanned, run.index, stop=1) for i, query in enumerate(block)]
    return tuple(np.stack(part) for part in zip(*kept))


def _candidates_batch(run: Run, block, ids_out, scores_out):
    """Stage-0 candidates of a block of queries from one index call, deleted rows masked out (-1).
    A query that deletions leave with fewer than k candidates runs alone (`_fallback`), its results
    written at once; returns the positions of the others in `block` and their candidate arrays."""
    store, index, stage, keeps, cost = run.store, run.index, run.plan.stages[0], run.keeps, run.cost
    start = time.perf_counter()
    rows, scores, dots = index.candidates_batch(store, block, stage, run.asked, cost)
    if run.dead is not None:
        rows = np.where(run.dead[np.maximum(rows, 0)], -1, rows)
        if run.asked > keeps[0] and _ranked(index):
            live = rows >= 0
            rows = np.where(live & (np.cumsum(live, axis=1) <= keeps[0]), rows, -1)
    enough = np.count_nonzero(rows >= 0, axis=1) >= keeps[-1]
    cost.stage_seconds[0] += time.perf_counter() - start
    for i in np.flatnonzero(~enough):
        start = time.perf_counter()
        alone = _fallback(store, index, block[i], stage, keeps, run.dead, cost)
        cost.stage_seconds[0] += time.perf_counter() - start
        ids_out[i], scores_out[i], _ = _funnel(store, block[i], *alone, run.plan, keeps, run.metric, run.dead, cost,
                                               run.scanned, index)
    if enough.all():
        return np.arange(len(block)), rows, scores, dots
    return np.flatnonzero(enough), rows[enough], scores[enough], None if dots is None else dots[enough]


def _funnel_batch(run: Run, queries, rows, scores, dots, start: int):
    """Stages `start`… of the funnel for a chunk of queries at once; returns (queries × k) rows and scores.

    Candidates are (queries × width) arrays: `rows` (-1 where a query has fewer candidates than the
    width), the ranking `scores` and, if known, partial products `dots` on the previous stage's dims.
    Each stage reads its rows' added dims in place (faiss, one call per block for the chunk) and keeps
    each query's best, as `_funnel` does for one.
    """
    store, plan, keeps, metric, cost = run.store, run.plan, run.keeps, run.metric, run.cost
    done, last = plan.stages[max(start - 1, 0)].dim, len(keeps) - 1
    valid = rows >= 0
    for n in range(start, len(keeps)):
        stage, keep = plan.stages[n], keeps[n]
        stage_start = time.perf_counter()
        count = int(np.count_nonzero(valid))
        run.scanned[n] += count
        if stage.codec:  # approximate scores from the index's prefix copy in RAM; the store is not read
            scores, dots = run.index.rescore_batch(queries, rows, stage, cost), None
        else:
            width = 0
            if n > 0:
                fresh = dots is None  # the index ranked by its own scores: products start here
                width = stage.dim if fresh else stage.dim - done
                if width:
                    added = store.dots_each(queries, 0 if fresh else done, stage.dim, rows)
                    dots = added if fresh else dots + added
            cost.multiply_adds += count * width
            cost.bytes_read += count * width * _F32
            if n > 0 or scores is None:
                scores = _scores(store, dots, np.maximum(rows, 0), stage.dim, metric, cost, count)
        done = stage.dim
        scores = np.where(valid, scores, np.float32(-np.inf))
        if n == last:
            if metric == "cosine":
                scores = scores * _inv_norms(queries[:, :done])[:, None]
            elif metric == "l2":
                head = queries[:, :done]
                scores = np.minimum(scores - np.einsum("ij,ij->i", head, head)[:, None], 0)
            pick = np.lexsort((np.where(valid, rows, _NO_ROW), -scores), axis=1)[:, :keep]  # ties: lower row
        else:
            pick = np.argpartition(-scores, keep - 1, axis=1)[:, :keep] if rows.shape[1] > keep else None
        if pick is not None:
            rows, scores, valid = (np.take_along_axis(a, pick, axis=1) for a in (rows, scores, valid))
            dots = None if dots is None else np.take_along_axis(dots, pick, axis=1)
        cost.stage_seconds[n] += time.perf_counter() - stage_start
    return rows, scores


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


def _deletions(count: int, dead_rows, dead_mask):
    """(how many rows are dead, their row numbers, their mask) from whichever of the two was given
    (the other None; both None when nothing is dead)."""
    if dead_mask is None:
        if dead_rows is None or not len(dead_rows):
            return 0, None, None
        return len(dead_rows), dead_rows, None
    if dead_rows is not None:
        raise InvalidInputError("give deleted rows as dead_rows or as dead_mask, not both")
    dead_mask = np.asarray(dead_mask)
    if dead_mask.dtype != bool or dead_mask.shape != (count,):
        raise InvalidInputError(f"dead_mask must be a boolean array with one value per stored row ({count}), "
                                f"got {dead_mask.dtype} of shape {dead_mask.shape}")
    n_dead = int(np.count_nonzero(dead_mask))
    return (n_dead, None, dead_mask) if n_dead else (0, None, None)


def _ranked(index) -> bool:
    """Whether the index returns its candidates nearest first (all but float32 IVF lists, returned whole)."""
    return not (index.kind == "p" and getattr(index, "codec", None) == "f32")


def _candidates(store, index, query, stage, keeps, dead, cost, asked):
    """Stage-0 rows from the index with their scores (and partial products, if it has them).

    Falls back to scanning everything when deletions leave fewer than k candidates.
    """
    start = time.perf_counter()
    rows, scores, dots = index.candidates(store, query, stage, asked, cost)
    if dead is not None:
        live = ~dead[rows]
        rows, scores, dots = rows[live], scores[live], None if dots is None else dots[live]
        if asked > keeps[0] and _ranked(index):
            rows, scores, dots = rows[: keeps[0]], scores[: keeps[0]], None if dots is None else dots[: keeps[0]]
    if len(rows) < keeps[-1]:
        rows, scores, dots = _fallback(store, index, query, stage, keeps, dead, cost)
    cost.stage_seconds[0] += time.perf_counter() - start
    return rows, scores, dots


def _fallback(store, index, query, stage, keeps, dead, cost):
    """Stage-0 candidates for a query whose index candidates are too few once deletions are
    dropped: every binary code ranked (every list, with binary IVF), else a full scan."""
    if index.kind == "h":
        rows, scores, _ = index.candidates(store, query, replace(stage, effort=None), store.count, cost)
        if dead is not None:
            rows, scores = rows[~dead[rows]], scores[~dead[rows]]
        return rows[: keeps[0]], scores[: keeps[0]], None  # nearest first, as a shortlist
    cost.items_scanned += store.count
    cost.multiply_adds += store.count * stage.dim
    cost.bytes_read += store.count * stage.dim * _F32
    return None, None, store.dots(query, 0, stage.dim)


def _funnel(store, query, rows, scores, dots, plan, keeps, metric, dead, cost, scanned, index=None, stop=None):
    """Run every stage for one query (or the first `stop`); return the rows kept, their scores and
    partial products (None once a stage ranked by approximate scores).

    Stage 0 arrives either as partial products `dots` of all rows (`rows` None,
    work not yet counted) or as an index's candidates `rows` with their ranking
    `scores` and, if the index has them, partial products (work counted by it).
    """
    done, last = plan.stages[0].dim, len(keeps) - 1
    for n, (stage, keep) in enumerate(zip(plan.stages, keeps)):
        stage_start = time.perf_counter()
        count = store.count if rows is None else len(rows)
        scanned[n] += count
        lo = 0 if dots is None else done  # the index ranked by its own scores: products start at 0
        if n > 0 and not stage.codec and store.whole_blocks(lo, stage.dim):  # one compiled call
            normed = metric != "ip"
            rows, scores, dots = store.rerank(query, rows, lo, stage.dim, dots, keep, metric=metric,
                                              scale=None if n == last and normed else 1.0)
            count_rerank(cost, count, lo, stage.dim, metric)
            done = stage.dim
            cost.stage_seconds[n] += time.perf_counter() - stage_start
            if n + 1 == stop:
                break
            continue
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
        if n == last and metric != "ip":  # a shortlist's ranking does not need the query's norm
            scores = _final(scores, query[:done], metric)
        if n == last and rows is not None:  # ties go to the lower row, as in exact search
            pick = np.lexsort((rows, -scores))[:keep]
        elif rows is not None and len(rows) <= keep:  # a shortlist that keeps every candidate it was given
            cost.stage_seconds[n] += time.perf_counter() - stage_start
            if n + 1 == stop:
                break
            continue
        else:
            pick = top_k(scores, min(keep, len(scores)), ordered=n == last)
        rows = pick if rows is None else rows[pick]
        scores = scores[pick]
        dots = None if dots is None else dots[pick]
        cost.stage_seconds[n] += time.perf_counter() - stage_start
        if n + 1 == stop:
            break
    return rows, scores, dots


def count_rerank(cost: Cost, count: int, lo: int, hi: int, metric: str) -> None:
    """The work of re-ranking `count` rows over dims [lo, hi) of the store: products, and a prefix norm each."""
    cost.multiply_adds += count * (hi - lo)
    cost.bytes_read += count * (hi - lo + (metric != "ip")) * _F32


def _scores(store, dots, rows, dim, metric, cost, count=None):
    """Ranking scores from partial products: cosine divides by the items' prefix norms, l2 takes
    2·product − ‖x‖² (‖q‖² − ‖q − x‖²). `rows` may be (queries × width), of which `count` are
    candidates (the rest padding, not counted)."""
    if metric == "ip":
        return dots.copy() if rows is None else dots
    count = len(dots) if count is None else count
    cost.multiply_adds += count * store.norm_work(dim)
    cost.bytes_read += count * (1 + store.norm_work(dim)) * _F32
    of = store.inv_prefix_norms if metric == "cosine" else store.prefix_squares
    norms = of(dim, rows.ravel()).reshape(rows.shape) if rows is not None and rows.ndim == 2 else of(dim, rows)
    return np.multiply(dots, norms) if metric == "cosine" else np.subtract(2 * dots, norms)


def _final(scores: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Last-stage scores from ranking ones, with the query's prefix: cosine divides by its norm, l2
    subtracts its squared norm (−‖q − x‖², at most 0)."""
    if metric == "cosine":
        return scores * _inv_norm(query)
    return np.minimum(scores - np.float32(np.dot(query, query)), 0)


def _inv_norm(vector: np.ndarray) -> np.float32:
    norm = math.sqrt(float(np.dot(vector, vector)))
    return np.float32(1.0 / norm if norm > 0 else 0.0)


def _inv_norms(vectors: np.ndarray) -> np.ndarray:
    """1/‖v‖ of each row, float32 (0 for a zero row)."""
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    with np.errstate(divide="ignore"):
        return np.where(norms > 0, 1.0 / norms, 0.0).astype(np.float32)


# -- searching a subset of the rows (a metadata filter's matches) ---------------------------------------------

# Up to these shares of the stored rows, a filtered search scans the allowed rows themselves (`run_rows`) instead of
# running the plan with the others masked out (`run_masked`): the crossovers measured on pkgsum, 100k rows, at plans
# of recall 0.95 (benchmarks/bench_filters.py --sweep, README "Metadata filters"), keyed by the first stage's index
# kind (None: a full-scan funnel). A graph's walk costs about the same at any size, so its crossover is also held to
# GRAPH_ROWS allowed rows; the other kinds' first stages grow with the rows as a scan of the allowed rows does.
ROWS_CROSSOVER = {None: 0.6, "p": 0.06, "g": 0.18, "q": 0.3, "h": 0.22}
GRAPH_ROWS = 18_000
_WIDEN_LISTS = 0.75  # an IVF probes nprobe · (1 + 0.75 · (1 − share)) lists when a filter lets `share` through


def row_plan(plan: Plan, nesting: list[int] | None = None) -> Plan:
    """The funnel `plan` runs over a given set of rows: its index stage becomes a scan of their prefix
    at the same dim and keep (binary codes, which have no float prefix, are left out), code-copy stages
    plain prefix stages; with the store's `nesting`, each dim rounds up to a block boundary (what the
    compiled re-rank reads in place); a stage the next one re-scores at the same dims is dropped."""
    up = (lambda d: min(n for n in nesting if n >= d)) if nesting else (lambda d: d)
    stages = [Stage(up(s.dim), s.keep) for s in plan.stages if s.index != "h"]
    kept = [s for s, nxt in zip(stages, stages[1:]) if nxt.dim > s.dim] + stages[-1:]
    return Plan(tuple(kept))


def scans_rows(plan: Plan, allowed: int, count: int) -> bool:
    """Whether a search letting `allowed` of `count` stored rows through scans those rows (`run_rows`)
    rather than running `plan` with the others masked out (`run_masked`)."""
    kind = plan.stages[0].index
    limit = ROWS_CROSSOVER[kind] * count
    return allowed <= (min(limit, GRAPH_ROWS) if kind == "g" else limit) or allowed <= (plan.stages[0].keep or 0)


def run_filtered(store: BlockStore, queries: np.ndarray, plan: Plan, k: int, metric: str, allowed: np.ndarray,
                 count: int, index=None, rows: np.ndarray | None = None,
                 excluded: np.ndarray | None = None) -> SearchResult:
    """Top-k of the `allowed` rows (one bool per stored row, `count` of them True, 1 ≤ k ≤ count) for
    each checked query: a selective mask scans the allowed rows on the plan's funnel (`run_rows`), a
    broad one runs the plan with the other rows masked out like deleted ones (`run_masked`); either way
    k results come back. `rows` (the allowed rows, ascending) and `excluded` (~allowed) may be given."""
    if scans_rows(plan, count, store.count):
        return run_rows(store, queries, plan, k, metric, np.flatnonzero(allowed) if rows is None else rows)
    return run_masked(store, queries, plan, k, metric, ~allowed if excluded is None else excluded, count, index)


def run_rows(store: BlockStore, queries: np.ndarray, plan: Plan, k: int, metric: str, rows: np.ndarray) -> SearchResult:
    """Top-k of `rows` only (ascending row numbers, k ≤ their number) for each checked query: `row_plan(plan)`
    over them, its first stage scoring every one of them on its prefix. Exact where the stages keep them all.
    The result's plan reads ``rows:<that funnel>``."""
    funnel = row_plan(plan, store.nesting)
    keeps = funnel.keeps(int(k), len(rows))
    first, normed = funnel.stages[0].dim, metric != "ip"
    start = time.perf_counter()
    cost = Cost(queries=len(queries), stage_seconds=[0.0] * len(funnel.stages))
    scanned = [0] * len(funnel.stages)
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores_out = np.empty((len(queries), k), dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    compiled = store.whole_blocks(0, first)
    for q, query in enumerate(queries):
        stage_start = time.perf_counter()
        cost.items_scanned += len(rows)
        cost.multiply_adds += len(rows) * first
        cost.bytes_read += len(rows) * first * _F32
        if compiled:  # products, norms and the best keeps[0] in one call
            cost.multiply_adds += len(rows) * store.norm_work(first) if normed else 0
            cost.bytes_read += len(rows) * (1 + store.norm_work(first)) * _F32 if normed else 0
            last = len(keeps) == 1
            top, scores, dots = store.rerank(query, rows, 0, first, None, keeps[0], metric=metric,
                                             scale=None if last and normed else 1.0)
            scanned[0] += len(rows)
            cost.stage_seconds[0] += time.perf_counter() - stage_start
            if last:
                ids[q], scores_out[q] = top, scores
                continue
            scanned[0] -= len(top)  # `_funnel` counts them again as stage 0's candidates
        else:
            dots = store.dots(query, 0, first, rows)
            scores = _scores(store, dots, rows, first, metric, cost)
            top = rows
            cost.stage_seconds[0] += time.perf_counter() - stage_start
        ids[q], scores_out[q], _ = _funnel(store, query, top, scores, dots, funnel, keeps, metric, None, cost, scanned)
    cost.seconds = time.perf_counter() - start
    cost.candidates = [t // len(queries) if t % len(queries) == 0 else t / len(queries) for t in scanned]
    return SearchResult(ids=ids, scores=scores_out, plan=f"rows:{funnel.text}", cost=cost)


def widen(plan: Plan, share: float, index) -> Plan:
    """`plan` for a search that sees `share` of the rows, as accurate as it is unfiltered: `run_checked` asks
    the index for keep / share candidates, and the nearest allowed rows lie further out, so an IVF probes
    nprobe · (1 + 0.75 · (1 − share)) lists (binary IVF likewise; at most all) and a graph walks with a beam
    of beam / share, its unfiltered ratio of beam to candidates (measured on pkgsum, README)."""
    stage = plan.stages[0]
    if stage.effort is None or share >= 1:
        return plan
    if stage.index == "g":
        wider = replace(stage, effort=min(math.ceil(stage.effort / share),
                                          max(getattr(index, "indexed_", 0), stage.effort)))
    else:  # an adaptive probe (p<least>-<most>~<spread>) widens both bounds
        lists = getattr(index, "n_lists", None) or getattr(index, "lists", None) or stage.effort
        more = lambda n: min(lists, max(n, math.ceil(n * (1 + _WIDEN_LISTS * (1 - share)))))  # noqa: E731
        wider = replace(stage, effort=more(stage.effort), least=None if stage.least is None else more(stage.least))
    return plan if wider == stage else Plan((wider, *plan.stages[1:]))


def run_masked(store: BlockStore, queries: np.ndarray, plan: Plan, k: int, metric: str, excluded: np.ndarray,
               count: int, index=None) -> SearchResult:
    """`run_checked` with the `excluded` rows (a mask; `count` rows are not excluded) treated as deleted and
    an IVF probe widened (`widen`), a chunk of queries at a time so that the candidates asked of an index
    (more by the share excluded) stay within the batch memory bound."""
    plan = widen(plan, count / store.count, index)
    n_out = store.count - count
    via = plan.stages[0].index
    if via is None or len(queries) == 1:
        return run_checked(store, queries, plan, k, metric, n_out, None, excluded, index)
    keep = plan.keeps(int(k), count)[0]
    asked = min(store.count, -(-keep * store.count // count))
    chunk = max(1, _CHUNK_BYTES // (_CANDIDATE_BYTES * max(asked, index.candidate_width(plan.stages[0], keep))))
    parts = [run_checked(store, queries[lo : lo + chunk], plan, k, metric, n_out, None, excluded, index)
             for lo in range(0, len(queries), chunk)]
    return parts[0] if len(parts) == 1 else _joined(parts)


def _joined(parts: list[SearchResult]) -> SearchResult:
    """One result from the results of consecutive chunks of a batch of queries."""
    total = sum(p.cost.queries for p in parts)
    cost = Cost(queries=total, stage_seconds=[sum(s) for s in zip(*(p.cost.stage_seconds for p in parts))])
    for name in ("multiply_adds", "bytes_read", "lists_probed", "items_scanned", "seconds"):
        setattr(cost, name, sum(getattr(p.cost, name) for p in parts))
    means = [sum(c * p.cost.queries for c, p in zip(column, parts)) / total
             for column in zip(*(p.cost.candidates for p in parts))]
    cost.candidates = [int(m) if float(m).is_integer() else m for m in means]
    return SearchResult(ids=np.concatenate([p.ids for p in parts]), scores=np.concatenate([p.scores for p in parts]),
                        plan=parts[0].plan, cost=cost)
