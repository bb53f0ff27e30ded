"""`Collection.tune`: measure every setting of a collection's indexes on calibration queries."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np
from tqdm import tqdm

from ..errors import InvalidInputError
from ..tuning.calibration import Calibration, Point, pseudo_queries, recall_at_k, tail
from ..tuning.grid import settings

NOISE = 0.8  # pseudo-queries: noise of 0.8× an item's norm (pkgsum: each setting's recall within 0.005 of real queries')
_ROUNDS = 2  # timing passes per setting; the faster one counts (this VM's speed drifts)


def calibrate(col, queries=None, *, sample: int = 1000, k: int = 10, timed: int = 200, seed: int = 0,
              progress: bool = False) -> Calibration:
    """Recall (all `queries`, batched), latency (the first `timed`, one at a time, through
    `col.search`) and cost of every setting `grid.settings` lists for the collection. Without
    `queries` (raw vectors, or texts), `sample` pseudo-queries are drawn from the stored items."""
    for name, value in (("sample", sample), ("k", k), ("timed", timed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    store, live = col._store, np.flatnonzero(~col._dead[: col._store.count]) if col._store is not None else None
    if store is None or not len(live):
        raise InvalidInputError(f"collection {col.path} is empty: nothing to calibrate")
    if queries is None:
        rows = np.sort(np.random.default_rng(seed).choice(live, min(sample, len(live)), replace=False))
        queries = col._transform.restore(pseudo_queries(store.rows(rows), noise=NOISE, seed=seed))
        source = f"pseudo: {len(rows)} stored items moved by noise {NOISE}× their norm (seed {seed})"
    else:
        queries = col._encoded(queries)
        source = f"given: {len(queries)} queries"
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(live))
    truth = col.search(queries, k=k, plan=f"d{store.dim}").ids
    plans = settings(col.manifest.recipe, store.nesting, len(live), k)
    measured = []
    for plan in tqdm(plans, desc="calibrating", disable=not progress):
        result = col.search(queries, k=k, plan=plan)
        recalls = recall_at_k(result.ids, truth)
        work = result.cost.per_query()
        seconds = _one_at_a_time(col, queries[:timed], k, plan)
        measured.append([plan, float(recalls.mean()), tail(recalls), float(seconds.mean() * 1e3),
                         float(np.percentile(seconds, 95) * 1e3), float(work["multiply_adds"]),
                         float(work["bytes_read"])])
    for column in (3, 4):
        _smooth_latency(measured, column)
    points = [Point(*values) for values in measured]
    m = col.manifest
    return Calibration(points, k, len(live), m.recipe, m.indexes, m.epoch, source,
                       datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _smooth_latency(measured: list[list], column: int) -> None:
    """Replace a latency column by a model of it: per kind of first stage (IVF, graph, PQ, binary codes,
    scans), least squares of ms on multiply-adds and bytes read, readings more than 3 median deviations
    off the first fit left out of the second. A query's time is a fixed part plus its work, and timing one
    setting at a time on a shared machine leaves each reading tens of percent of noise, which would pick
    the frontier (and so every target's plan) at random among settings of nearly equal cost."""
    kinds: dict[str, list[list]] = {}
    for values in measured:
        kinds.setdefault(values[0][0] if values[0][0] in "pgqh" else "d", []).append(values)
    for members in kinds.values():
        if len(members) < 4:
            continue
        work = np.array([[1.0, values[5], values[6]] for values in members])
        ms = np.array([values[column] for values in members])
        keep = np.ones(len(ms), dtype=bool)
        for _ in range(2):
            coef = np.linalg.lstsq(work[keep] / work[keep].max(axis=0), ms[keep], rcond=None)[0]
            fitted = (work / work[keep].max(axis=0)) @ coef
            residual = np.abs(ms - fitted)
            keep = residual <= 3 * max(float(np.median(residual[keep])), 1e-9)
        for values, value in zip(members, fitted):
            values[column] = max(float(value), 1e-6)


def _one_at_a_time(col, queries: np.ndarray, k: int, plan: str) -> np.ndarray:
    """Seconds per query through `col.search`, one query at a time: the faster of `_ROUNDS` passes."""
    best = None
    for _ in range(_ROUNDS):
        seconds = np.empty(len(queries))
        for i in range(len(queries)):
            start = time.perf_counter()
            col.search(queries[i : i + 1], k=k, plan=plan)
            seconds[i] = time.perf_counter() - start
        best = seconds if best is None or seconds.sum() < best.sum() else best
    return best
