"""/v1/collections/{name}/search: one query, by text or vector, with a plan or a target, a filter and a mode."""

from __future__ import annotations

import time

from fastapi import APIRouter

from ...collection import Collection
from ...errors import InvalidInputError
from ...plan import Plan
from ...results import SearchResult
from ..deps import ERRORS, READ, CollectionName, Collections
from ..schemas import Search, SearchAnswer
from .documents import query_matrix

router = APIRouter(prefix="/v1/collections", tags=["search"], responses=ERRORS)


@router.post("/{name}/search", response_model=SearchAnswer, dependencies=READ)
def search(name: CollectionName, body: Search, collections: Collections) -> dict:
    """The top k documents for one query, best first, with the plan that served it and what it cost."""
    start = time.perf_counter()
    vector = None if body.vector is None else query_matrix([body.vector], "vector")
    with collections.reading(name) as col:
        result = col.search(body.query if body.query is not None else vector, k=body.k, plan=body.plan,
                            mode=body.mode, fusion=body.fusion,
                            query_vectors=vector if body.query is not None else None,
                            target_recall=body.target_recall, max_ms=body.max_ms, max_cost=body.max_cost,
                            filter=body.filter, parents=body.parents)
        hits = _hits(col, result)
    return {"results": hits, "plan": result.plan, "mode": result.mode, "target": result.target,
            "cost": cost_record(result), "took_ms": (time.perf_counter() - start) * 1e3}


def cost_record(result: SearchResult) -> dict:
    """The search's work per query, with the stages of its plan."""
    try:
        stages = [str(stage) for stage in Plan.parse(result.plan).stages]
    except InvalidInputError:  # a target's split or drift note, or a lexical ranking
        stages = [result.plan]
    return {"stages": stages, **result.cost.per_query()}


def _hits(col: Collection, result: SearchResult) -> list[dict]:
    """The first query's results with their stored text and metadata (a passage's, for a search by parent)."""
    ranked = [(i, float(s), n) for n, (i, s) in enumerate(zip(result.ids[0], result.scores[0])) if i is not None]
    passages = None if result.passages is None else result.passages[0]
    looked_up = [str(passages[n]) if passages is not None else str(i) for i, _, n in ranked]
    records = records_of(col, looked_up)
    hits = []
    for (i, score, n), key in zip(ranked, looked_up):
        record = records.get(key)
        if record is None:
            continue  # deleted since the search ran
        hit = {"id": str(i), "score": score, "text": record.text, "metadata": record.metadata}
        if passages is not None:
            hit["passage"] = key
        hits.append(hit)
    return hits


def records_of(col: Collection, ids: list[str]) -> dict:
    """The stored records of the hits `ids` by id, leaving out any deleted since the search."""
    if not ids:
        return {}
    try:
        return {r.id: r for r in col.get(ids)}
    except InvalidInputError:  # one was deleted between the search and now: read them one by one
        found = {}
        for i in dict.fromkeys(ids):
            try:
                found[i] = col.get([i])[0]
            except InvalidInputError:
                pass
        return found
