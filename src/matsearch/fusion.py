"""Fusing ranked lists (hybrid search): reciprocal-rank fusion or a weighted sum of normalised scores.

A fusion is a short string that round-trips, like a plan: ``rrf:k60:n100`` adds
1 / (60 + rank) over the lists an item appears in (ranks from 1), taking the top
100 of each list; ``weighted:w0.5:n100`` min-max normalises each list's scores over
its own top 100 to [0, 1] and adds them with weights w (the first list, dense) and
1 − w (the second, lexical); an item missing from a list gets 0 from it. Parts may
be left out (``rrf``, ``rrf:k30``, ``weighted:w0.7``): they take the defaults.
Ties keep the order the items were first met in (the first list before the second).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError

METHODS = ("rrf", "weighted")
_PART = re.compile(r"(?P<key>[knw])(?P<value>[0-9]+(?:\.[0-9]+)?)")


@dataclass(frozen=True)
class Fusion:
    """How hybrid search merges its dense and lexical lists: `method` "rrf" (constant `k`) or "weighted"
    (dense share `weight`), over the top `depth` of each list."""

    method: str = "rrf"
    k: int = 60
    depth: int = 100
    weight: float = 0.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise InvalidInputError(f"fusion method {self.method!r} is not one of {METHODS}")
        for name in ("k", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidInputError(f"fusion {name} must be a positive integer, got {value!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not 0 <= self.weight <= 1:
            raise InvalidInputError(f"fusion weight must be a number from 0 to 1, got {self.weight!r}")

    @classmethod
    def parse(cls, text: str) -> "Fusion":
        """'rrf', 'rrf:k60:n100', 'weighted:w0.3:n200', … → Fusion; a malformed part is named."""
        if isinstance(text, Fusion):
            return text
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"fusion must be a string such as 'rrf:k60:n100' or 'weighted:w0.5', got {text!r}")
        method, *parts = text.strip().split(":")
        if method not in METHODS:
            raise InvalidInputError(f"fusion {text!r}: method {method!r} is not one of {METHODS}")
        allowed = {"rrf": "kn", "weighted": "wn"}[method]
        values: dict = {}
        for part in parts:
            match = _PART.fullmatch(part)
            if match is None or match["key"] not in allowed or match["key"] in values:
                raise InvalidInputError(
                    f"fusion {text!r}: malformed part {part!r} ({method} takes "
                    + (" and ".join(f"{key}<{name}>" for key, name in zip(allowed, _NAMES[method]))) + ", each once)")
            values[match["key"]] = match["value"]
        for key in "kn":
            if not values.get(key, "1").isdigit():
                raise InvalidInputError(f"fusion {text!r}: {key} must be a whole number, got {values[key]!r}")
        try:
            return cls(method=method, k=int(values.get("k", 60)), depth=int(values.get("n", 100)),
                       weight=float(values.get("w", 0.5)))
        except InvalidInputError as exc:
            raise InvalidInputError(f"fusion {text!r}: {exc}") from None

    def __str__(self) -> str:
        if self.method == "rrf":
            return f"rrf:k{self.k}:n{self.depth}"
        return f"weighted:w{self.weight:g}:n{self.depth}"

    def fuse(self, dense: tuple, lexical: tuple, top: int) -> tuple[list, np.ndarray]:
        """The best `top` of two (ids, scores) lists, each best first: fused ids and their fused scores."""
        if self.method == "rrf":
            return reciprocal_rank_fusion([dense[0], lexical[0]], k=self.k, top=top)
        return weighted_fusion([dense, lexical], [self.weight, 1.0 - self.weight], top=top)


_NAMES = {"rrf": ("k", "depth"), "weighted": ("dense weight", "depth")}


def as_fusion(fusion) -> Fusion:
    """None → the default (rrf:k60:n100); a string is parsed; a Fusion is kept."""
    if fusion is None:
        return Fusion()
    return fusion if isinstance(fusion, Fusion) else Fusion.parse(fusion)


def reciprocal_rank_fusion(rankings: list, *, k: int = 60, top: int | None = None) -> tuple[list, np.ndarray]:
    """Items of several best-first lists ranked by Σ 1 / (k + rank), rank counted from 1."""
    scores: dict = {}
    for ranking in rankings:
        ranking = ranking.tolist() if isinstance(ranking, np.ndarray) else list(ranking)
        for item, share in zip(ranking, (1.0 / np.arange(k + 1, k + 1 + len(ranking))).tolist()):
            scores[item] = scores.get(item, 0.0) + share
    return _best(scores, top)


def weighted_fusion(lists: list, weights: list[float], *, top: int | None = None) -> tuple[list, np.ndarray]:
    """Items of several (ids, scores) lists ranked by Σ weight · (score − min) / (max − min) over each list
    (a list whose scores are all equal gives each of its items 1)."""
    fused: dict = {}
    for (ids, values), weight in zip(lists, weights):
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            continue
        low, span = values.min(), values.max() - values.min()
        normal = (values - low) / span if span > 0 else np.ones_like(values)
        ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        for item, value in zip(ids, (weight * normal).tolist()):
            fused[item] = fused.get(item, 0.0) + value
    return _best(fused, top)


def _best(scores: dict, top: int | None) -> tuple[list, np.ndarray]:
    """The `top` best items of `scores`, ties in the order the items were first met."""
    items = list(scores)
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(items))
    order = np.argsort(-values, kind="stable")[:top]
    return [items[i] for i in order], values[order]
