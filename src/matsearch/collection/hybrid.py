"""Search modes beside dense: lexical (BM25 over the items' texts) and hybrid (dense and lexical lists fused).

`Collection.search(..., mode=...)` hands every call that is not plainly dense to `search`
here. Modes:

- ``dense``: the plan over the vectors (the collection's own code path);
- ``lexical``: BM25 (see lexical.py); only items whose text shares a term with the query
  are results, so a row of ids may end in None (score -inf) where fewer than k match;
- ``hybrid``: the dense top-n (honouring `plan`) and the lexical top-n fused (fusion.py:
  RRF k = 60 over n = 100 by default, or a weighted sum of normalised scores); always k results.

The default (mode None): vector queries are dense; text queries are hybrid when the
collection holds text (lexical when it has no model to embed them), dense otherwise —
hybrid measured best on SciFact, NPL and Cranfield (README, benchmarks/bench_hybrid.py).

A hybrid search runs the dense search, then the lexical one, each under the collection's
read lock; should a commit land between them, it runs again, so both see one state.

A metadata filter (filters.py) applies to both halves: each sees only the live items it matches,
and with fewer than k of those a search returns that many columns.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import InvalidInputError
from ..fusion import as_fusion
from ..matryoshka import check_vectors
from ..results import Cost, SearchResult
from ..search import check_k

MODES = ("dense", "lexical", "hybrid")
LEXICAL_PLAN = "bm25"
_TRIES = 3  # runs of a hybrid/lexical search when commits keep landing in the middle of it
_POSTING_BYTES = 8  # a float32 score and an int32 document per posting read


def is_text(queries) -> bool:
    return isinstance(queries, str) or (isinstance(queries, (list, tuple)) and len(queries) > 0
                                        and isinstance(queries[0], str))


def search(col, queries, *, k: int, plan, mode: str | None, fusion, query_vectors, filter=None) -> SearchResult:
    """`Collection.search` for every call that is not plainly dense (see the module docstring); `filter`
    a parsed metadata filter (filters.Filter) or None."""
    if mode is not None and mode not in MODES:
        raise InvalidInputError(f"mode {mode!r} is not one of {MODES}")
    texts = _check_texts(queries) if is_text(queries) else None
    if mode in ("lexical", "hybrid") and texts is None:
        raise InvalidInputError(f"{mode} search needs text queries (a string or a list of strings), "
                                f"got {type(queries).__name__}{' of vectors' if queries is not None else ''}")
    col._sync()
    if mode is None:
        mode = _default_mode(col, texts, query_vectors)
    if fusion is not None and mode != "hybrid":
        raise InvalidInputError(f"fusion {fusion!s} applies to hybrid search only, not mode {mode!r}")
    if query_vectors is not None and mode != "hybrid":
        raise InvalidInputError(f"query_vectors are the dense half of a hybrid search; for mode {mode!r} "
                                + ("pass the vectors as the queries" if mode == "dense" else "give texts only"))
    if mode == "dense":
        return col.search(queries, k=k, plan=plan, mode="dense", filter=filter)
    if mode == "lexical":
        if plan is not None:
            raise InvalidInputError(f"plan {plan!s} ranks vectors; lexical search has none (use mode='hybrid')")
        return _lexical(col, texts, k, filter)
    return _hybrid(col, texts, k, plan, as_fusion(fusion), query_vectors, filter)


def _check_texts(queries) -> list[str]:
    texts = [queries] if isinstance(queries, str) else list(queries)
    empty = [n for n, q in enumerate(texts) if not isinstance(q, str) or not q.strip()]
    if empty:
        raise InvalidInputError(f"query {empty[0]} is empty: {texts[empty[0]]!r}")
    return texts


def _default_mode(col, texts, query_vectors) -> str:
    if texts is None or col._store is None or col._store.count == col._n_dead:
        return "dense"
    if not _index(col).documents:
        return "dense"
    return "lexical" if col.manifest.model is None and query_vectors is None else "hybrid"


def _index(col):
    store = col._searchable()
    return col._lexical.current(col._docs, store.count, col.manifest.epoch)


def _lexical_hits(col, index, texts, depth, chosen=None):
    """Under the read lock: the lexical top-`depth` per text as (ids, scores, hits), among the rows a
    filter's selection `chosen` lets through (when given) or all live rows."""
    store = col._searchable()
    if not index.documents:
        raise InvalidInputError(f"collection {col.path} holds no text: lexical search has nothing to match "
                                "(add items with texts)")
    excluded = chosen.excluded if chosen is not None else col._dead[: store.count] if col._n_dead else None
    hits = index.search(texts, depth, excluded, store.count)
    ids = np.full(hits.rows.shape, None, dtype=object)
    found = hits.rows >= 0
    if found.any():
        ids[found] = col._ids.lookup(hits.rows[found])
    return ids, hits


def _lexical(col, texts: list[str], k: int, filter=None) -> SearchResult:
    start = time.perf_counter()
    for attempt in range(_TRIES):
        seen = col._seen
        index = _index(col)
        with col._rw.reading():
            if col._seen != seen and attempt + 1 < _TRIES:
                continue  # a commit landed since the index was brought up to date
            store = col._searchable()
            chosen = None if filter is None else col._filters.select(col, filter)
            if chosen is None:
                check_k(k, store.count - col._n_dead)
            else:
                k = min(k, chosen.count)
            ids, hits = _lexical_hits(col, index, texts, k, chosen) if k else (None, None)
            break
    seconds = time.perf_counter() - start
    if hits is None:  # a filter that matches nothing
        return _nothing(texts, LEXICAL_PLAN, "lexical", seconds)
    cost = Cost(queries=len(texts), bytes_read=hits.postings * _POSTING_BYTES, candidates=[hits.matched // len(texts)],
                stage_seconds=[seconds], items_scanned=hits.postings, seconds=seconds,
                matched=None if chosen is None else chosen.count)
    return SearchResult(ids=ids, scores=hits.scores, plan=LEXICAL_PLAN, cost=cost, mode="lexical")


def _nothing(texts: list[str], plan: str, mode: str, seconds: float) -> SearchResult:
    """The result of a search whose filter matches no item: no columns."""
    cost = Cost(queries=len(texts), candidates=[0], stage_seconds=[seconds], seconds=seconds, matched=0)
    return SearchResult(ids=np.empty((len(texts), 0), dtype=object), scores=np.empty((len(texts), 0), np.float32),
                        plan=plan, cost=cost, mode=mode)


def _hybrid(col, texts: list[str], k: int, plan, fusion, query_vectors, filter=None) -> SearchResult:
    if query_vectors is None:
        if col.manifest.model is None:
            raise InvalidInputError(f"hybrid search embeds the query texts, but collection {col.path} has no model "
                                    "(created with model=None): use mode='lexical', or give query_vectors")
        raw = col.encoder.encode(texts)
    else:
        raw = check_vectors(query_vectors, col.manifest.dim, what="query_vectors")
        if len(raw) != len(texts):
            raise InvalidInputError(f"got {len(raw)} query_vectors for {len(texts)} query texts")
    asked = k
    for attempt in range(_TRIES):
        seen = col._seen
        index = _index(col)
        if filter is None:
            live = col._store.count - col._n_dead
            check_k(k, live)
        else:
            with col._rw.reading():
                live = col._filters.select(col, filter).count
            k = min(asked, live)
            if not k:
                dense_plan = plan if plan is not None else f"d{col.manifest.dim}"
                return _nothing(texts, f"hybrid({dense_plan} + {LEXICAL_PLAN}, {fusion})", "hybrid", 0.0)
        depth = min(max(fusion.depth, k), live)
        dense = col.search(raw, k=depth, plan=plan, mode="dense", filter=filter)
        with col._rw.reading():
            if col._seen != seen and attempt + 1 < _TRIES:
                continue  # a commit landed between the dense search and now: run both again on one state
            start = time.perf_counter()
            chosen = None if filter is None else col._filters.select(col, filter)
            lexical_ids, hits = _lexical_hits(col, index, texts, depth, chosen)
            lexical_seconds = time.perf_counter() - start
            break
    start = time.perf_counter()
    ids = np.empty((len(texts), k), dtype=object)
    scores = np.empty((len(texts), k), dtype=np.float32)
    for q in range(len(texts)):
        found = hits.rows[q] >= 0
        fused, values = fusion.fuse((dense.ids[q], dense.scores[q]), (lexical_ids[q][found], hits.scores[q][found]),
                                    top=k)
        ids[q], scores[q] = fused, values
    fuse_seconds = time.perf_counter() - start
    c = dense.cost
    cost = Cost(queries=len(texts), multiply_adds=c.multiply_adds,
                bytes_read=c.bytes_read + hits.postings * _POSTING_BYTES,
                candidates=[*c.candidates, hits.matched // len(texts), k],
                stage_seconds=[*c.stage_seconds, lexical_seconds, fuse_seconds], lists_probed=c.lists_probed,
                items_scanned=c.items_scanned + hits.postings, seconds=c.seconds + lexical_seconds + fuse_seconds,
                matched=c.matched)
    return SearchResult(ids=ids, scores=scores, plan=f"hybrid({dense.plan} + {LEXICAL_PLAN}, {fusion})", cost=cost,
                        mode="hybrid")
