"""The settings a calibration tries: plans over every index a recipe builds, and plain funnels.

Each index kind gets a geometric ladder of its effort knob (lists probed, graph beam, shortlist
size) crossed with a few re-rank depths, so the measured points span recall 0.5–1.0 and the
frontier has a point every few percent of cost.
"""

from __future__ import annotations

from ..recipe import BinaryPart, GraphPart, IVFPart, PQPart, Recipe

_PROBES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256,
           384, 512)
_BEAMS = (16, 24, 32, 40, 48, 56, 64, 80, 96, 128, 192, 256)
_SHORTLISTS = (100, 200, 500, 1000, 2000, 5000)
_SPREADS = (0.2, 0.25, 0.3, 0.35, 0.4)  # adaptive IVF probes: the cosine gap to the nearest list's centroid
# adaptive fast scans: the stopping rule's margin (ivf.py); on pkgsum 0.25 stops at ~0.82 recall@10, 0.4 at ~0.96
_MARGINS = (0.15, 0.2, 0.25, 0.275, 0.3, 0.325, 0.35, 0.375, 0.4, 0.425, 0.45, 0.5, 0.55, 0.6, 0.7)
_MID_KEEP, _MID_FROM = 20, 100  # a re-rank on a middle prefix keeps 20 (at least 2k) of shortlists of 100 or more


def settings(recipe: str, nesting: list[int], rows: int, k: int, metric: str = "cosine",
             stops: bool = True) -> list[str]:
    """Plan strings worth measuring for a collection of `rows` items with this recipe, nesting and metric;
    `stops`: fast-scan IVF lists adapt per query by the stopping margin (else by the probe's spread)."""
    dim = nesting[-1]
    plans = [f"d{dim}"]
    short = next((d for d in nesting if d >= dim // 8), nesting[0])
    if short < dim:  # a nesting of one prefix has no shorter one to shortlist on
        plans += [f"d{short}:{keep}>d{dim}" for keep in _SHORTLISTS if k < keep < rows]
    for part in Recipe.parse(recipe).parts:
        plans += _part_settings(part, nesting, rows, k, metric, stops)
    return list(dict.fromkeys(plans))


def _part_settings(part, nesting: list[int], rows: int, k: int, metric: str, stops: bool) -> list[str]:
    dim = nesting[-1]
    own_dim = getattr(part, "scan_dim", None) or getattr(part, "dim", None)
    if own_dim == dim:  # the index searches the full dim: nothing longer to re-rank on, its effort knob only
        return _full_dim_settings(part)
    keeps = [keep for keep in (50, 100, 200) if keep >= k] or [k]
    if isinstance(part, IVFPart):
        probes = [p for p in _PROBES if p <= part.lists]
        if part.codec == "f32":  # float lists give exact partial products: one re-rank depth is enough
            return [f"p{p}@d{part.scan_dim}:{keeps[-1]}>d{dim}" for p in probes]
        # codes rank approximately; their shortlist is re-ranked on the full dims, or first on a prefix between
        # (the best 2k of 100 or more on d256 of 384 kept pkgsum's recall for ~30 µs less a query)
        mid = next((d for d in nesting if part.scan_dim < d < dim), None)
        ends = [f">d{dim}"] + ([f">d{mid}:{max(2 * k, _MID_KEEP)}>d{dim}"] if mid else [])
        fixed = [f"p{p}@d{part.scan_dim}:{keep}{end}" for p in probes for keep in keeps for end in ends
                 if end == ends[0] or keep >= _MID_FROM]
        if stops and part.codec.endswith("x4fs") and metric != "l2":  # our fast scan: per query, stop by the margin
            least, most = max(1, part.lists // 32), max(2, part.lists // 2)
            adaptive = [f"p{least}-{most}^{margin}@d{part.scan_dim}:{keep}{end}" for margin in _MARGINS
                        for keep in keeps[:2] for end in ends if end == ends[0] or keep >= _MID_FROM]
        else:
            adaptive = [f"p{least}-{most}~{spread}@d{part.scan_dim}:{keep}{end}"  # per query: lists near the best
                        for least in sorted({max(1, part.lists // 32), max(1, part.lists // 16)})
                        for most in sorted({max(2, part.lists // 4), max(2, part.lists // 2)}) if least < most
                        for spread in _SPREADS for keep in keeps[:2] for end in ends
                        if end == ends[0] or keep >= _MID_FROM]
        return fixed + adaptive
    if isinstance(part, GraphPart):
        depths = sorted({max(k, 32), max(k, 64)})
        return [f"g{beam}@d{part.dim}:{keep}>d{dim}" for beam in _BEAMS for keep in depths if beam >= keep]
    if isinstance(part, PQPart):
        return [f"q@d{part.dim}:{keep}>d{dim}" for keep in _SHORTLISTS if k < keep < rows]
    if isinstance(part, BinaryPart):
        probes = [None] if part.lists is None else [p for p in (4, 8, 16, 32, 64, 128) if p <= part.lists]
        return [f"h{'' if p is None else p}@b{part.bits}:{keep}>d{dim}"
                for p in probes for keep in _SHORTLISTS if k < keep < rows]
    return []


def _full_dim_settings(part) -> list[str]:
    """One-stage plans for an index over the full dim (a collection whose nesting is its dim alone)."""
    if isinstance(part, IVFPart):
        return [f"p{p}@d{part.scan_dim}" for p in _PROBES if p <= part.lists]
    if isinstance(part, GraphPart):
        return [f"g{beam}@d{part.dim}" for beam in _BEAMS]
    return [f"q@d{part.dim}"] if isinstance(part, PQPart) else []
