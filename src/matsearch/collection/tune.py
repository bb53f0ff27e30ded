"""`Collection.tune`: measure every setting of a collection's indexes on calibration queries."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np
from tqdm import tqdm

from ..errors import InvalidInputError
from ..tuning.calibration import Calibration, Point, pseudo_queries, recall_at_k, tail
from ..tuning.grid import settings

NOISE = 0.8  # pseudo-queries: noise 0.8× an item's norm (pkgsum: each setting's recall within 0.01 of real queries')
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
    measured, drivers = [], []
    for plan in tqdm(plans, desc="calibrating", disable=not progress):
        result = col.search(queries, k=k, plan=plan)
        recalls = recall_at_k(result.ids, truth)
        work = result.cost.per_query()
        seconds = _one_at_a_time(col, queries[:timed], k, plan)
        measured.append([plan, float(recalls.mean()), tail(recalls), float(seconds.mean() * 1e3),
                         float(np.percentile(seconds, 95) * 1e3), float(work["multiply_adds"]),
                         float(work["bytes_read"])])
        # what a query's time grows with: items scanned (codes, nodes, rows), lists opened, rows re-ranked
        drivers.append([work["items_scanned"], work["lists_probed"], sum(work["candidates"][1:]),
                        work["multiply_adds"]])
    raw_p95 = [values[4] for values in measured]
    for column in (3, 4):
        _smooth_latency(measured, drivers, column)
    for values, raw in zip(measured, raw_p95):  # a budget (max_ms) is kept: the p95 is never smoothed below a reading
        values[4] = max(values[4], raw)
    points = [Point(*values) for values in measured]
    m = col.manifest
    return Calibration(points, k, len(live), m.recipe, m.indexes, m.epoch, source,
                       datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _smooth_latency(measured: list[list], drivers: list[list], column: int) -> None:
    """Replace a latency column by a model of it: per kind of first stage (IVF, graph, PQ, binary codes,
    scans), least squares of ms on what the time grows with (`drivers`: items scanned, lists opened,
    rows re-ranked from the store, multiply-adds), readings more than 3 median deviations off the first
    fit left out of the second. A query's time is a fixed part plus its work, and timing one setting at a
    time on a shared machine leaves each reading tens of percent of noise, which would pick the frontier
    (and so every target's plan) at random among settings of nearly equal cost."""
    kinds: dict[str, list[int]] = {}
    for n, values in enumerate(measured):
        kinds.setdefault(values[0][0] if values[0][0] in "pgqh" else "d", []).append(n)
    for rows in kinds.values():
        if len(rows) < 6:
            continue
        drv = np.array([drivers[n] for n in rows], dtype=float)
        drv = drv[:, np.ptp(drv, axis=0) > 0]
        work = np.hstack([np.ones((len(rows), 1)), drv / np.maximum(drv.max(axis=0), 1e-12)])
        ms = np.array([measured[n][column] for n in rows])
        fitted = _nonnegative_fit(work, ms)
        residual = np.abs(ms - fitted)
        fitted = _nonnegative_fit(work, ms, residual <= 3 * max(float(np.median(residual)), 1e-9))
        for n, value in zip(rows, fitted):
            measured[n][column] = max(float(value), 1e-6)


def _nonnegative_fit(work: np.ndarray, ms: np.ndarray, use: np.ndarray | None = None) -> np.ndarray:
    """Least squares of `ms` on the columns of `work` (the first a constant) over the rows `use`, dropping
    any driver whose coefficient comes out negative (more work is never faster); the fitted values."""
    use = np.ones(len(ms), dtype=bool) if use is None else use
    columns = list(range(work.shape[1]))
    while True:
        coef = np.linalg.lstsq(work[use][:, columns], ms[use], rcond=None)[0]
        negative = [c for c, value in zip(columns[1:], coef[1:]) if value < 0]
        if not negative:
            return work[:, columns] @ coef
        columns.remove(negative[0])


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
