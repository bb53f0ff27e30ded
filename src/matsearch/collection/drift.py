"""A recall target's guard against drift: a query unlike the calibration queries is searched again with more effort.

Calibration records the 1st percentile of its queries' top-1 scores (`Calibration.top1_floor`). A dense search
under a recall target whose query scores its top-1 below that floor is far from anything calibration measured
(another domain, a malformed vector), and the target's plans do not give it the recall they were calibrated
at: on SciFact, other collections' queries and random vectors got 0.73-0.86 at a 0.95 target. Such queries are
searched again with `Calibration.guard(target)` (0.94-0.98 there); the result's plan and target say so.
"""

from __future__ import annotations

import numpy as np

from ..results import Cost, SearchResult


def guarded(col, queries: np.ndarray, result: SearchResult, k: int, guard: tuple[float, str]) -> SearchResult:
    """`result` of `queries` (raw, 2-D), with each query scoring its top-1 below the guard's floor
    searched again with the guard's plan; its cost counts both searches."""
    floor, plan = guard
    drifted = np.flatnonzero(result.scores[:, 0] < floor)
    if not len(drifted):
        return result
    again = col.search(queries[drifted], k=k, plan=plan)
    ids, scores = result.ids.copy(), result.scores.copy()
    ids[drifted], scores[drifted] = again.ids, again.scores
    note = f"drift: {len(drifted)} of {len(queries)} queries scored top-1 below {floor:.3f}, searched again with {plan}"
    return SearchResult(ids, scores, f"{result.plan}; {plan} for {len(drifted)} drifted",
                        _rerun(result.cost, again.cost), result.mode, f"{result.target}; {note}")


def _rerun(first: Cost, again: Cost) -> Cost:
    """Both searches' work, per query of the first (a query searched again counts its work twice)."""
    total = Cost.added([first, again])
    scale = total.queries / first.queries
    total.queries = first.queries
    total.candidates = [c * scale for c in total.candidates]
    return total
