"""Pseudo-queries: calibration queries drawn from the collection itself, when no query log is given.

Two kinds. For a collection that holds texts and an encoder, short spans of its documents (Contriever-style
random crops: a sentence or a window of a few words), embedded by the collection's encoder: real queries are
short (a claim, a question, some keywords) against long documents, and a span is as far from its document
as they are. For vectors alone, stored items moved by Gaussian noise.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import InvalidInputError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def noisy(stored: np.ndarray, *, noise: float, seed: int) -> np.ndarray:
    """Stored vectors (in the collection's space) moved by Gaussian noise of `noise` times each one's
    norm, spread over all dims: queries near the data but not on it, as real queries are."""
    rng = np.random.default_rng(seed)
    norms = np.linalg.norm(stored, axis=1, keepdims=True)
    moved = stored + rng.standard_normal(stored.shape).astype(np.float32) * (noise * norms / np.sqrt(stored.shape[1]))
    return moved.astype(np.float32)


def spans(texts: list[str], *, words: tuple[int, int], sentences: float, seed: int) -> list[str]:
    """One random crop of each text: with probability `sentences` one of its sentences (cut to at most
    `words[1]` words from a random start), else a window of `words[0]`..`words[1]` words at a random place;
    a text shorter than the window whole."""
    low, high = words
    if not 1 <= low <= high:
        raise InvalidInputError(f"span words must be 1 <= low <= high, got {words!r}")
    if not 0 <= sentences <= 1:
        raise InvalidInputError(f"sentences must be a share in [0, 1], got {sentences!r}")
    rng = np.random.default_rng(seed)
    return [_crop(text, rng, low, high, sentences) for text in texts]


def _crop(text: str, rng: np.random.Generator, low: int, high: int, sentences: float) -> str:
    """One crop of one text (see `spans`)."""
    if rng.random() < sentences:
        parts = [s for s in _SENTENCE_END.split(text.strip()) if s.split()] or [text]
        words, size = parts[rng.integers(len(parts))].split(), high
    else:
        words, size = text.split(), int(rng.integers(low, high + 1))
    start = int(rng.integers(max(len(words) - size, 0) + 1))
    return " ".join(words[start : start + size])
