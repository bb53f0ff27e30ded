"""Ranking metrics against graded qrels, and recall against exact search."""

from __future__ import annotations

import math


def ndcg_at_k(ranked: list[str], relevance: dict[str, int], k: int) -> float:
    """nDCG@k with linear gains (as trec_eval and BEIR compute it)."""
    dcg = sum(relevance.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: list[str], relevance: dict[str, int], k: int) -> float:
    """Share of the relevant documents (grade > 0) found in the top k."""
    relevant = {doc for doc, g in relevance.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def overlap_at_k(found, exact, k: int) -> float:
    """ANN recall@k: share of the exact top-k that the search returned in its top k."""
    return len(set(list(found)[:k]).intersection(list(exact)[:k])) / k
