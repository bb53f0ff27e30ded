"""Merging the shards' answers to one search into the global top-k, with the cost of all of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..results import Cost, SearchResult


@dataclass(slots=True)
class ShardedResult(SearchResult):
    """A `SearchResult` over shards: `shards` searched, `missing` those that did not answer (only when the search
    allowed partial results: then the result is `partial` and holds the other shards' top-k), each answering
    shard's own search time (`shard_seconds`, in shard order), and `overhead_seconds`, the wall time beyond the
    slowest shard's (Ray's calls, the merge)."""

    shards: int = 1
    missing: tuple[int, ...] = ()
    shard_seconds: tuple[float, ...] = ()
    overhead_seconds: float = 0.0

    @property
    def partial(self) -> bool:
        return bool(self.missing)


def merge(answers: dict[int, SearchResult | None], k: int, queries: int, shards: int, seconds: float,
          missing: tuple[int, ...] = ()) -> ShardedResult:
    """The best `k` per query of the shards' results (ties: the lower shard first), with their costs summed:
    work, candidates and stage times added over shards, `seconds` the wall time of the whole search."""
    results = [answers[s] for s in sorted(answers) if answers[s] is not None]
    ids = np.concatenate([r.ids for r in results], axis=1)
    scores = np.concatenate([r.scores for r in results], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    plans = list(dict.fromkeys(r.plan for r in results))
    targets = list(dict.fromkeys(r.target for r in results))
    cost = merged_cost([r.cost for r in results], queries, seconds)
    return ShardedResult(np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1),
                         plans[0] if len(plans) == 1 else " | ".join(plans), cost, mode=results[0].mode,
                         target=targets[0] if len(targets) == 1 else " | ".join(map(str, targets)),
                         shards=shards, missing=tuple(missing), shard_seconds=tuple(r.cost.seconds for r in results),
                         overhead_seconds=max(0.0, seconds - max(r.cost.seconds for r in results)))


def merged_cost(costs: list[Cost], queries: int, seconds: float) -> Cost:
    """The work of every shard for the same `queries` queries: totals added, candidates per stage added (each
    shard keeps its own), stage times added where every shard ran the same stages."""
    total = Cost(queries=queries, seconds=seconds)
    for name in ("multiply_adds", "bytes_read", "lists_probed", "items_scanned"):
        setattr(total, name, sum(getattr(c, name) for c in costs))
    if len({len(c.stage_seconds) for c in costs}) == 1:
        total.stage_seconds = [sum(t) for t in zip(*(c.stage_seconds for c in costs))]
        total.candidates = [sum(n) for n in zip(*(c.candidates for c in costs))]
    if all(c.matched is not None for c in costs):
        total.matched = sum(c.matched for c in costs)
    return total
