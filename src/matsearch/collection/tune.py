"""`Collection.tune`: measure every setting of a collection's indexes on calibration queries."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import numpy as np
from tqdm import tqdm

from ..encoder_student import VARIANTS as ENCODERS
from ..errors import InvalidInputError
from ..plan import Plan
from ..tuning.calibration import Calibration, Point, recall_at_k, tail
from ..tuning.grid import settings
from ..tuning.pseudo import noisy, spans

NOISE = 0.8  # pseudo-queries: noise 0.8× an item's norm (pkgsum: each setting's recall within 0.01 of real queries')
# text pseudo-queries: a sentence (half the time) or a window of 20-40 words, chosen on half of SciFact's claims:
# each setting's recall on them is 0.0028 from the claims' on average (sentences of up to 20 words 0.0033, windows
# of 4-10 words 0.050, noise 0.029); bench_planner reports the sweep
SPAN_WORDS, SPAN_SENTENCES = (20, 40), 0.5
PSEUDO = ("auto", "spans", "noise")
log = logging.getLogger(__name__)
DRIFT_PERCENTILE = 1  # a query whose top-1 score is below this percentile of the calibration queries' has drifted
_ROUNDS = 2  # timing passes per setting; the faster one counts (this VM's speed drifts)
ENCODER_TIMED = 50  # query texts each encoder sub-model embeds, one at a time, to time it


def calibrate(col, queries=None, *, sample: int = 1000, k: int = 10, timed: int = 200, seed: int = 0,
              pseudo: str = "auto", progress: bool = False) -> Calibration:
    """Recall (all `queries`, batched), latency (the first `timed`, one at a time, through
    `col.search`) and cost of every setting `grid.settings` lists for the collection. Without
    `queries` (raw vectors, or texts), `sample` pseudo-queries are drawn from the stored items: `pseudo`
    "spans" (short spans of their texts, embedded), "noise" (their vectors moved by noise) or "auto" (spans
    where the collection has a model and the item a text, noise otherwise)."""
    for name, value in (("sample", sample), ("k", k), ("timed", timed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    if pseudo not in PSEUDO:
        raise InvalidInputError(f"pseudo must be one of {', '.join(PSEUDO)}; got {pseudo!r}")
    store, live = col._store, np.flatnonzero(~col._dead[: col._store.count]) if col._store is not None else None
    if store is None or not len(live):
        raise InvalidInputError(f"collection {col.path} is empty: nothing to calibrate")
    if queries is None:
        rows = np.sort(np.random.default_rng(seed).choice(live, min(sample, len(live)), replace=False))
        queries, source, spanned, texts = _pseudo_queries(col, rows, pseudo, seed)
        origin = col._ids.lookup(rows)
    else:
        texts = [queries] if isinstance(queries, str) else list(queries) if isinstance(queries, (list, tuple)) else []
        queries, origin, spanned = col._encoded(queries), None, None
        source = f"given: {len(queries)} queries"
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    # a span is scored on the items other than the one it was cut from, whose text holds it word for word
    excluded = None if spanned is None or not spanned.any() or len(live) < 2 else np.where(spanned, origin, None)
    k = min(k, len(live) - (excluded is not None))
    exact = col.search(queries, k=min(k + 1, len(live)), plan=f"d{store.dim}")
    truth = _others(exact.ids, excluded, k)
    # the stopping rule of a fast scan reads the shortlist's scores, which noise on stored vectors does not
    # reproduce (pkgsum: margins chosen on such pseudo-queries for 0.95 gave real queries 0.92): it is
    # calibrated on spans or a query log only, the probe's spread on noise
    stops = spanned is None or bool(spanned.all())
    plans = settings(col.manifest.recipe, store.nesting, len(live), k, col.manifest.metric, stops=stops)
    measured, drivers = [], []
    for plan in tqdm(plans, desc="calibrating", disable=not progress):
        result = col.search(queries, k=min(k + (excluded is not None), len(live)), plan=plan)
        recalls = recall_at_k(_others(result.ids, excluded, k), truth)
        work = result.cost.per_query()
        seconds = _one_at_a_time(col, queries[:timed], k, plan)
        measured.append([plan, float(recalls.mean()), tail(recalls), float(seconds.mean() * 1e3),
                         float(np.percentile(seconds, 95) * 1e3), float(work["multiply_adds"]),
                         float(work["bytes_read"])])
        # what a query's time grows with: items scanned (codes, nodes, rows), lists opened, rows' blocks re-ranked
        drivers.append([work["items_scanned"], work["lists_probed"],
                        _blocks_reread(Plan.parse(plan), store.nesting, work["candidates"]), work["multiply_adds"]])
    raw_p95 = [values[4] for values in measured]
    for column in (3, 4):
        _smooth_latency(measured, drivers, column)
    for values, raw in zip(measured, raw_p95):  # a budget (max_ms) is kept: the p95 is never smoothed below a reading
        values[4] = max(values[4], raw)
    points = [Point(*values) for values in measured]
    m = col.manifest
    calibration = Calibration(points, k, len(live), m.recipe, m.indexes, m.epoch, source,
                              datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              top1_floor=_top1_floor(exact, origin))
    calibration.notes["effort"] = _policy_effort(col, calibration, queries, k)
    calibration.encoder_ms = _encoder_ms(col, [t for t in texts if isinstance(t, str)][:ENCODER_TIMED])
    return calibration


def _encoder_ms(col, texts: list[str]) -> dict | None:
    """Per encoder sub-model the collection's model has: the 95th percentile of ms to embed one of `texts` (query-like
    texts), one at a time, the faster of `_ROUNDS` passes; None without texts (a text query's `max_ms` then budgets
    the search alone)."""
    if not texts or col.manifest.model is None:
        return None
    spent = {}
    for variant in ENCODERS:
        try:
            encoder = col.encoder_for(variant)
            encoder.encode(texts[:2])  # loaded (or exported) before the clock runs
        except (InvalidInputError, OSError) as exc:  # no student for this model, or it cannot load here
            log.info("encoder %s not timed: %s", variant, exc)
            continue
        seconds = _best_pass(lambda text: encoder.encode([text]), texts)
        spent[variant] = float(np.percentile(seconds, 95) * 1e3)
    return spent or None


REPORTED = (0.8, 0.9, 0.95, 0.99)  # the recall targets whose per-query effort a calibration reports


def _policy_effort(col, calibration: Calibration, queries: np.ndarray, k: int) -> dict:
    """Per reachable target of `REPORTED`: the plans that serve it (each with its share of queries) and the
    effort each calibration query gets from them, one query at a time: multiply-adds, and lists probed where
    the plans probe IVF lists (the policy's spend on easy and hard queries, for the report and its plot)."""
    best = max(p.recall for p in calibration.points)
    out = {}
    for target in (t for t in REPORTED if t <= best):
        cheaper, dearer, share = calibration.mix(target)
        cut = int(round(share * len(queries)))  # as a batch is split: the first share to the dearer plan
        served = [(dearer.plan, queries[:cut]), (cheaper.plan, queries[cut:])]
        effort = {"plans": {}, "multiply_adds": [], "lists_probed": []}
        for plan, part in served:
            if not len(part):
                continue
            effort["plans"][plan] = len(part)
            for query in part:
                cost = col.search(query[None], k=k, plan=plan).cost
                effort["multiply_adds"].append(float(cost.multiply_adds))
                effort["lists_probed"].append(int(cost.lists_probed))
        out[str(target)] = effort
    return out


def _others(ids: np.ndarray, excluded: np.ndarray | None, k: int) -> np.ndarray:
    """Each row's first `k` ids other than its `excluded` id (`ids` holds k + 1; None: none excluded). A span
    finds the item it was cut from far more easily than a real query finds anything (on pkgsum, counting that
    item made the recall calibrated for a 0.95 target 0.010 above what the real queries then got); noise
    pseudo-queries keep their item, as the noise level was set with it counted."""
    if excluded is None:
        return ids[:, :k]
    return np.array([[i for i in row if i != own][:k] for row, own in zip(ids.tolist(), excluded)], dtype=object)


def _top1_floor(exact, origin: np.ndarray | None) -> float:
    """The `DRIFT_PERCENTILE`th percentile of the calibration queries' top-1 scores (`exact`: their exact
    search). A pseudo-query is scored against the items other than the one it was drawn from (`origin`: its
    id), as it holds that item's words or vector and a real query does not: on pkgsum this floor flags 0-1%
    of the real queries (and 100% of random vectors), where counting the item itself would flag 22-70%."""
    top = exact.scores[:, 0]
    if origin is not None and exact.ids.shape[1] > 1:
        top = np.where(exact.ids[:, 0] == origin, exact.scores[:, 1], top)
    return float(np.percentile(top, DRIFT_PERCENTILE))


def _pseudo_queries(col, rows: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, str, np.ndarray, list[str]]:
    """Raw query vectors drawn from the items in `rows` (see `calibrate`), a line saying how, which of them are
    spans of the item's text (the rest: its vector moved by noise), and the spans."""
    records = col.get(list(col._ids.lookup(rows)))
    texts = [r.text if r.text and r.text.split() else None for r in records]
    if kind == "noise" or (kind == "auto" and (col.manifest.model is None or not any(texts))):
        texts = [None] * len(rows)
    elif col.manifest.model is None or not any(texts):
        raise InvalidInputError(f"pseudo='spans' needs texts and a model; collection {col.path} has "
                                f"{'no model' if col.manifest.model is None else 'no texts in the items sampled'}")
    has, cut = np.array([t is not None for t in texts]), []
    stored = np.stack([r.vector for r in records]).astype(np.float32)
    queries = col._transform.restore(noisy(stored, noise=NOISE, seed=seed))
    if has.any():
        cut = spans([t for t in texts if t is not None], words=SPAN_WORDS, sentences=SPAN_SENTENCES, seed=seed)
        try:
            queries[has] = col.encoder.encode(cut)
        except InvalidInputError as exc:  # the model cannot be loaded here: "auto" keeps the noisy vectors
            if kind != "auto":
                raise
            log.warning("%s; calibrating on stored items moved by noise instead", exc)
            has[:] = False
    said = []
    if has.any():
        low, high = SPAN_WORDS
        said.append(f"{has.sum()} text spans ({SPAN_SENTENCES:.0%} sentences, else {low}-{high} words)")
    if not has.all():
        said.append(f"{(~has).sum()} stored items moved by noise {NOISE}× their norm")
    return queries, f"pseudo: {', '.join(said)} (seed {seed})", has, cut if has.any() else []


def _blocks_reread(plan: Plan, nesting: list[int], candidates: list) -> float:
    """Store blocks a query's re-rank stages read, one per row and block (each a random read, which is what a
    re-rank's time grows with): after an index's scores from dim 0 (float32 IVF lists' exact partial products
    aside, counted as if not), else from the stage before."""
    lo = 0 if plan.stages[0].index is not None else plan.stages[0].dim
    total = 0.0
    for stage, count in zip(plan.stages[1:], candidates[1:]):
        if stage.codec is None:
            total += count * sum(1 for bound in nesting if lo < bound <= stage.dim)
            lo = stage.dim
    return total


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
    return _best_pass(lambda query: col.search(query[None], k=k, plan=plan), queries)


def _best_pass(call, items) -> np.ndarray:
    """Seconds of `call(item)` for each of `items`, one at a time: the faster of `_ROUNDS` passes."""
    best = None
    for _ in range(_ROUNDS):
        seconds = np.empty(len(items))
        for i, item in enumerate(items):
            start = time.perf_counter()
            call(item)
            seconds[i] = time.perf_counter() - start
        best = seconds if best is None or seconds.sum() < best.sum() else best
    return best
