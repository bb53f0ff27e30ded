"""A collection's calibration: each setting's recall, cost and latency on calibration queries, the
Pareto frontier they form, and the plan a target asks for.

Recall is the mean recall@k against exact search over all dims; latency is measured one query at a
time through `Collection.search` (mean and 95th percentile); cost is the search's own record
(multiply-adds and bytes read per query). Calibration queries are the user's (a query log) or
pseudo-queries drawn from the stored items (pseudo.py): short spans of their texts, or their vectors
moved by noise where there is no text (see the README for how each stands in for real queries).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CollectionError, InvalidInputError
from ..plan import Plan

STALE_SHARE = 0.2  # rows added or deleted since calibration, as a share of the rows calibrated, that make it stale
DEFAULT_TARGET = 0.95  # the recall a calibrated collection serves when a search names neither plan nor target
# a latency budget (max_ms) takes plans whose calibrated 95th percentile is within this share of it: this VM's
# speed drifts by ±10% from one minute to the next (a plan calibrated at 0.324 ms for a 0.3 ms budget was not met;
# with 0.85, one calibrated within 0.255 ms met a 0.3 ms budget for 93.9% of queries on a VM running 10% slower)
LATENCY_HEADROOM = 0.8
_FORMAT = 1


@dataclass(frozen=True)
class Point:
    """One setting as measured on the calibration queries."""

    plan: str
    recall: float  # mean recall@k
    tail_recall: float  # mean recall@k of the worst 10% of queries
    ms: float  # mean milliseconds per query, one at a time
    ms_p95: float  # 95th percentile of the same
    multiply_adds: float  # per query
    bytes_read: float  # per query


@dataclass
class Calibration:
    """Measured points and what they were measured on; `choose` maps a target to a plan."""

    points: list[Point]
    k: int
    rows: int  # live items when calibrated
    recipe: str
    indexes: str  # the index folder the points were measured on
    epoch: int
    queries: str  # where the calibration queries came from
    created: str  # ISO date and time
    notes: dict = field(default_factory=dict)
    top1_floor: float | None = None  # the 1st percentile of the calibration queries' top-1 scores (drift below it)
    encoder_ms: dict | None = None  # per encoder sub-model ("full", "fast"): 95th percentile ms to embed one query
    _chosen: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # target → point, made once

    def frontier(self, cost: str = "ms") -> list[Point]:
        """Points no other point beats on both recall and `cost` ("ms", "ms_p95", "multiply_adds" or
        "bytes_read"), cheapest first."""
        return _pareto(self.points, cost)

    def choose(self, *, target_recall: float | None = None, max_ms: float | None = None,
               max_cost: float | None = None) -> Point:
        """The frontier point for one target: the cheapest reaching `target_recall` (mean recall@k), or the
        most accurate whose 95th-percentile latency is within `max_ms` (times `LATENCY_HEADROOM`), or whose
        multiply-adds per query are within `max_cost`."""
        key = (target_recall, max_ms, max_cost)
        if key not in self._chosen:
            self._chosen[key] = self._choose(target_recall, max_ms, max_cost)
        return self._chosen[key]

    def serve(self, *, target_recall: float | None = None, max_ms: float | None = None,
              max_cost: float | None = None) -> tuple[str, str, tuple[str, float] | None, tuple[float, str] | None]:
        """What a search with this target runs: (plan, a line saying the target and what calibration
        measured for the plan, for a recall target between two frontier points (the cheaper plan, the
        share of queries the first plan takes) else None, and for a recall target the drift guard
        (`top1_floor`, the plan a query scoring its top-1 below it gets: `guard`) else None). Made once per target."""
        key = ("serve", target_recall, max_ms, max_cost)
        if key not in self._chosen:
            point = self.choose(target_recall=target_recall, max_ms=max_ms, max_cost=max_cost)
            name, value = next((n, v) for n, v in (("target_recall", target_recall), ("max_ms", max_ms),
                                                   ("max_cost", max_cost)) if v is not None)
            split = guard = None
            if target_recall is not None:  # the two frontier points around the target, in the share that meets it
                cheaper, point, share = self.mix(target_recall)
                split = None if share >= 1 else (cheaper.plan, share)
                guard = None if self.top1_floor is None else (self.top1_floor, self.guard(target_recall).plan)
            self._chosen[key] = (point.plan, f"{name}={value} (calibrated: recall {point.recall:.3f}, "
                                             f"{point.ms:.3f} ms)", split, guard)
        return self._chosen[key]

    def encoder_for(self, max_ms: float, encoders: tuple[str, ...]) -> tuple[str, float]:
        """For a text query under `max_ms`: the first of `encoders` (most accurate first) after which some plan
        fits, and what the budget leaves the search (all of it for an encoder calibration did not time)."""
        spent = {}
        for encoder in encoders:
            spent[encoder] = (self.encoder_ms or {}).get(encoder, 0.0)
            left = max_ms - spent[encoder]
            try:
                if left > 0:
                    self.choose(max_ms=left)
                    return encoder, left
            except InvalidInputError:
                pass
        cheapest = min(self._steady(), key=lambda p: p.ms_p95)
        quickest = min(spent, key=spent.get)
        raise InvalidInputError(f"max_ms {max_ms} is out of reach for a text query: the {quickest} encoder takes "
                                f"{spent[quickest]:.3g} ms and the cheapest calibrated plan, {cheapest.plan}, "
                                f"{cheapest.ms_p95:.3g} ms for 95% of queries, and a budget keeps "
                                f"{1 - LATENCY_HEADROOM:.0%} of headroom")

    def _steady(self) -> list[Point]:
        """The points whose work does not vary by query (no adaptive probe): the ones a latency budget takes."""
        return [p for p in self.points if not Plan.parse(p.plan).adaptive]

    def guard(self, target_recall: float) -> Point:
        """The plan for a query unlike the calibration queries (top-1 score below `top1_floor`): the cheapest
        frontier point whose worst 10% of calibration queries reach `target_recall` (the most accurate point
        when none does). Such a query is served as one of the hardest calibration queries: on SciFact, other
        collections' queries and random vectors got 0.73-0.86 at a 0.95 target's plans, 0.94-0.98 at this one."""
        key = ("guard", target_recall)
        if key not in self._chosen:
            front = self.frontier("ms")
            self._chosen[key] = next((p for p in front if p.tail_recall >= target_recall), front[-1])
        return self._chosen[key]

    def mix(self, target_recall: float) -> tuple[Point, Point, float]:
        """Two frontier points and the share of queries to give the dearer one so that the mean recall is
        `target_recall` exactly (in expectation): (cheaper, dearer, share). Sharing queries between two plans
        serves any point on the line between them, so the pair is taken from the frontier's upper convex hull in
        (ms, recall): a point under a line between two others is never worth mixing (on SciFact at 0.95, the
        fixed `p14` sat under the line between two stopping margins, and serving it to 71% of the claims gave
        up most of the worst tenth's gain)."""
        key = ("mix", target_recall)
        if key not in self._chosen:
            self._chosen[key] = self._mix(target_recall)
        return self._chosen[key]

    def _mix(self, target_recall: float) -> tuple[Point, Point, float]:
        self.choose(target_recall=target_recall)  # checks the target, and that some point reaches it
        hull = _upper_hull(self.frontier("ms"))
        dearer = next(p for p in hull if p.recall >= target_recall)
        below = [p for p in hull if p.recall < target_recall]
        if not below or dearer.recall <= target_recall:
            return dearer, dearer, 1.0
        cheaper = below[-1]
        return cheaper, dearer, (target_recall - cheaper.recall) / (dearer.recall - cheaper.recall)

    def _choose(self, target_recall, max_ms, max_cost) -> Point:
        given = {name: value for name, value in (("target_recall", target_recall), ("max_ms", max_ms),
                                                   ("max_cost", max_cost)) if value is not None}
        if len(given) != 1:
            raise InvalidInputError(f"give one target (target_recall, max_ms or max_cost), got {given or 'none'}")
        (name, value), = given.items()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0 \
                or (name == "target_recall" and value > 1):
            raise InvalidInputError(f"{name} must be a positive number{' up to 1' if name == 'target_recall' else ''}, "
                                    f"got {value!r}")
        if name == "target_recall":
            reaching = [p for p in self.frontier("ms") if p.recall >= value]
            if not reaching:
                best = max(self.points, key=lambda p: p.recall)
                raise InvalidInputError(f"target recall {value} is out of reach: the best calibrated plan, "
                                        f"{best.plan}, reaches {best.recall:.4f}")
            return reaching[0]
        cost = "ms_p95" if name == "max_ms" else "multiply_adds"
        # a latency budget holds per query, so it takes plans whose work does not vary by query: an adaptive
        # probe spends more on hard queries, and real queries are harder than pseudo-queries more often than not
        pool = self._steady() if name == "max_ms" else self.points
        limit = value * LATENCY_HEADROOM if name == "max_ms" else value
        within = [p for p in _pareto(pool, cost) if getattr(p, cost) <= limit]
        if not within:
            cheapest = min(pool, key=lambda p: getattr(p, cost))
            what = (f"ms for 95% of queries, and a budget keeps {1 - LATENCY_HEADROOM:.0%} of headroom"
                    if name == "max_ms" else "multiply-adds per query")
            raise InvalidInputError(f"{name} {value} is out of reach: the cheapest calibrated plan, {cheapest.plan}, "
                                    f"needs {getattr(cheapest, cost):.4g} {what}")
        return within[-1]

    def stale(self, *, rows: int, recipe: str, indexes: str, epoch: int) -> str | None:
        """Why the points no longer describe the collection (None while they do)."""
        if (recipe, indexes, epoch) != (self.recipe, self.indexes, self.epoch):
            return "the indexes were rebuilt or the vectors rewritten since"
        if abs(rows - self.rows) > STALE_SHARE * max(self.rows, 1):
            return f"it measured {self.rows:,} items and the collection holds {rows:,}"
        return None

    def save(self, path: Path) -> None:
        """Write atomically (a reader sees the old file or the new one)."""
        data = {"format": _FORMAT, **asdict(self)}
        del data["_chosen"]
        staged = Path(f"{path}.tmp")
        staged.write_text(json.dumps(data, indent=1))
        os.replace(staged, path)

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        try:
            data = json.loads(Path(path).read_text())
            if data.pop("format") != _FORMAT:
                raise ValueError("unknown format")
            data["points"] = [Point(**p) for p in data["points"]]
            return cls(**data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CollectionError(f"calibration file {path} is unreadable ({exc}); run `matsearch tune` again") \
                from None


def _pareto(points: list[Point], cost: str) -> list[Point]:
    """The points no other beats on both recall and `cost`, cheapest first."""
    best, kept = -1.0, []
    for point in sorted(points, key=lambda p: (getattr(p, cost), -p.recall)):
        if point.recall > best:
            kept.append(point)
            best = point.recall
    return kept


def _upper_hull(front: list[Point]) -> list[Point]:
    """The points of a frontier (cheapest first, recall rising) on its upper convex hull in (ms, recall)."""
    hull: list[Point] = []
    for point in front:
        while len(hull) >= 2 and ((hull[-1].ms - hull[-2].ms) * (point.recall - hull[-2].recall)
                                  >= (hull[-1].recall - hull[-2].recall) * (point.ms - hull[-2].ms)):
            hull.pop()  # the last point is on or under the line from the one before it to this one
        hull.append(point)
    return hull


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per query, the share of its true top-k ids found."""
    return np.array([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())])


def tail(recalls: np.ndarray) -> float:
    """Mean recall of the worst 10% of queries (at least one)."""
    worst = np.sort(recalls)[: max(1, len(recalls) // 10)]
    return float(worst.mean())
