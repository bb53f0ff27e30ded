"""Evaluate a collection on a BEIR dataset: quality against qrels, speed, recall against exact."""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

from ..collection import Collection
from ..collection.hybrid import MODES
from ..data import BeirDataset
from ..errors import InvalidInputError
from ..plan import Plan
from .metrics import ndcg_at_k, overlap_at_k, recall_at_k


def evaluate(
    collection: Collection,
    dataset: BeirDataset,
    *,
    plan: Plan | str | None = None,
    query_vectors: np.ndarray | None = None,
    mode: str = "dense",
    fusion=None,
    target_recall: float | None = None,
    filter=None,
    progress: bool = False,
) -> dict:
    """Search every judged query one at a time on one thread and score the rankings.

    `mode` "dense" (the default) searches the query vectors with `plan`; "lexical" the query
    texts by BM25; "hybrid" both, fused by `fusion` (see `Collection.search`). `query_vectors`
    (rows in the dataset's query order) skip the encoder; queries are embedded before the
    timing starts. Returns nDCG@10, recall@10/@100 against qrels, ANN recall@10 against exact
    full-dim dense search (None for lexical), mean multiply-adds and bytes read per query, and
    queries per second. With `target_recall` (a calibrated collection, instead of `plan`) the
    result also says the target beside the ANN recall@10 achieved. With a metadata `filter` every search
    (the exact reference too) sees only the items it matches, and `matched` says how many.
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode {mode!r} is not one of {MODES}")
    judged = [n for n, qid in enumerate(dataset.query_ids) if qid in dataset.qrels]
    if not judged:
        raise InvalidInputError("no query in the queries file has relevance judgements")
    texts = [dataset.query_texts[n] for n in judged]
    if mode == "lexical":
        vectors = None
    elif query_vectors is None:
        vectors = collection.encoder.encode(texts, progress=progress)
    else:
        if len(query_vectors) != len(dataset.query_ids):
            raise InvalidInputError(
                f"query vectors have {len(query_vectors)} rows, the queries file has {len(dataset.query_ids)}"
            )
        vectors = np.asarray(query_vectors)[judged]
    k = min(100, len(collection))
    top = min(10, k)
    if mode == "dense":
        search = lambda n: collection.search(vectors[n], k=k, plan=plan, target_recall=target_recall,  # noqa: E731
                                             filter=filter)
    elif mode == "lexical":
        search = lambda n: collection.search(texts[n], k=k, plan=plan, mode="lexical", filter=filter)  # noqa: E731
    else:
        search = lambda n: collection.search(texts[n], k=k, plan=plan, mode="hybrid", fusion=fusion,  # noqa: E731
                                             query_vectors=vectors[n : n + 1], target_recall=target_recall,
                                             filter=filter)
    with threadpool_limits(1):
        search(0)  # warm the page cache and the code paths
        results, seconds, cost = [], 0.0, {"multiply_adds": 0.0, "bytes_read": 0.0}
        for n in range(len(judged)):
            start = time.perf_counter()
            result = search(n)
            seconds += time.perf_counter() - start
            results.append([i for i in result.ids[0] if i is not None])
            for key in cost:
                cost[key] += getattr(result.cost, key)
        exact = None if vectors is None else collection.search(vectors, k=top, plan=f"d{collection.dim}",
                                                               filter=filter).ids
    qids = [dataset.query_ids[n] for n in judged]
    mean = lambda values: float(np.mean(values))  # noqa: E731
    return {
        "mode": mode,
        "plan": result.plan,
        "target_recall": target_recall,
        "queries": len(judged),
        "ndcg@10": mean([ndcg_at_k(r, dataset.qrels[q], 10) for r, q in zip(results, qids)]),
        "recall@10": mean([recall_at_k(r, dataset.qrels[q], 10) for r, q in zip(results, qids)]),
        "recall@100": mean([recall_at_k(r, dataset.qrels[q], 100) for r, q in zip(results, qids)]),
        "ann_recall@10": None if exact is None or not exact.shape[1] else
        mean([overlap_at_k(r, e, exact.shape[1]) for r, e in zip(results, exact)]),
        "mean_cost": cost["multiply_adds"] / len(judged),
        "mean_bytes_read": cost["bytes_read"] / len(judged),
        "qps": len(judged) / seconds,
        "matched": result.cost.matched,
    }
