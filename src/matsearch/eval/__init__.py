"""Retrieval quality and speed."""

from .evaluate import evaluate
from .metrics import ndcg_at_k, overlap_at_k, recall_at_k

__all__ = ["evaluate", "ndcg_at_k", "overlap_at_k", "recall_at_k"]
