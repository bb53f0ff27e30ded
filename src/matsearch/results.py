"""Search results that carry the work they cost."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Cost:
    """Work done for a batch of queries (totals; `per_query` divides them).

    `candidates[i]` is how many items stage i kept scores for per query (a
    mean when it varies, as with IVF probes), `items_scanned` how many items'
    prefixes or codes the first stage read in all (every item for a full scan,
    the probed lists' items for IVF, the visited nodes for a graph),
    `stage_seconds[i]` the wall time stage i took over the whole batch,
    `lists_probed` the IVF lists scanned in all, `matched` the live items a metadata filter let
    through (None without a filter).
    """

    queries: int
    multiply_adds: int = 0
    bytes_read: int = 0
    candidates: list[int] = field(default_factory=list)
    stage_seconds: list[float] = field(default_factory=list)
    lists_probed: int = 0
    items_scanned: int = 0
    seconds: float = 0.0
    matched: int | None = None

    @classmethod
    def added(cls, costs: list["Cost"]) -> "Cost":
        """The cost of several searches together: totals added, per-stage figures kept only where every
        search ran the same stages (candidates as the mean per query)."""
        total = cls(queries=sum(c.queries for c in costs))
        for name in ("multiply_adds", "bytes_read", "lists_probed", "items_scanned", "seconds"):
            setattr(total, name, sum(getattr(c, name) for c in costs))
        if len({len(c.stage_seconds) for c in costs}) == 1:
            total.stage_seconds = [sum(t) for t in zip(*(c.stage_seconds for c in costs))]
            total.candidates = [sum(n * c.queries for n, c in zip(column, costs)) / total.queries
                                for column in zip(*(c.candidates for c in costs))]
        return total

    def per_query(self) -> dict:
        """Mean work per query, as plain numbers for JSON."""
        n = max(self.queries, 1)
        return {
            "multiply_adds": self.multiply_adds / n,
            "bytes_read": self.bytes_read / n,
            "candidates": list(self.candidates),
            "stage_seconds": [t / n for t in self.stage_seconds],
            "lists_probed": self.lists_probed / n,
            "items_scanned": self.items_scanned / n,
            "seconds": self.seconds / n,
            **({} if self.matched is None else {"matched": self.matched}),
        }


@dataclass(slots=True)
class SearchResult:
    """Top-k ids and scores per query (best first), the plan run, its cost, the search mode
    ("dense", "lexical" or "hybrid"; a lexical row ends in None ids, scored -inf, where fewer than k match)
    and the target that chose the plan, if one did (with what calibration measured for it); for a search by
    parent document (`parents=True`), `passages` holds the id of the best passage behind each parent id; `encoder`
    names the sub-model that embedded text queries ("full", or "fast": the model's student)."""

    ids: np.ndarray
    scores: np.ndarray
    plan: str
    cost: Cost
    mode: str = "dense"
    target: str | None = None
    passages: np.ndarray | None = None
    encoder: str = "full"

    def __len__(self) -> int:
        return len(self.ids)
