"""Exact top-k selection without sorting or partitioning all n scores."""

from __future__ import annotations

import numpy as np

_SAMPLE = 4096  # scores sampled to guess a threshold
_MARGIN = 1.5  # aim for about this many times k survivors


def top_k(scores: np.ndarray, k: int, *, ordered: bool = True) -> np.ndarray:
    """Indices of the `k` largest scores: best first (ties to the lower index), or
    in no particular order when `ordered` is False, which a shortlist can afford.

    A strided sample estimates a threshold that about 1.5k scores pass; one
    vectorised comparison keeps those, and only they are sorted. If fewer than k
    pass (an unlucky sample), the threshold falls back to the exact k-th value.
    """
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if n <= 4 * _SAMPLE or k * 16 > n:
        candidates = _at_least_kth(scores, k)
    else:
        stride = n // _SAMPLE
        sample = scores[::stride]
        rank = min(len(sample) - 1, int(np.ceil(_MARGIN * k / stride)) + 8)
        threshold = np.partition(sample, len(sample) - 1 - rank)[len(sample) - 1 - rank]
        candidates = np.flatnonzero(scores >= threshold)
        if len(candidates) < k:
            candidates = _at_least_kth(scores, k)
    if not ordered:
        if len(candidates) == k:
            return candidates
        return candidates[np.argpartition(scores[candidates], len(candidates) - k)[len(candidates) - k :]]
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order[:k]]


def _at_least_kth(scores: np.ndarray, k: int) -> np.ndarray:
    """All indices whose score is at least the k-th largest (ties included)."""
    n = scores.shape[0]
    if k == n:
        return np.arange(n)
    kth = np.partition(scores, n - k)[n - k]
    return np.flatnonzero(scores >= kth)
