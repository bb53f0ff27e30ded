"""AdANNS-IVF: clustering dim and scan dim decoupled.

Centroids are learned (faiss k-means) on the `centroid_dim`-prefix of the stored
vectors and every item joins its nearest centroid there. Further centroid sets
(`probe_dims`) hold each list's mean at other prefix dims, so a query may pick
the dim it probes with. The lists hold either a float32 copy of the stored
prefix blocks up to `scan_dim`, which a query scans at any nesting d_s ≤ scan_dim
it chooses, or compressed codes of the scan_dim prefix (float16, int8, or PQ
with asymmetric distance tables, 8-bit or 4-bit fast scan) that only shortlist
for the funnel's exact re-rank (see `ivf_lists`). Rows added to the store later join their nearest
lists (`extend`), exactly where a build with the same centroids would put them.
For the l2 metric the k-means is Euclidean, rows join and queries probe the lists nearest by distance
(a probe adds −‖c‖²/2 to the query's product with each centroid c), and coded lists are scored by faiss
as squared distances d, handed on as ‖q‖² − d (the funnel's l2 ranking score).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import faiss
import numpy as np

from .. import _kernels
from ..errors import CollectionError, InvalidInputError
from ..matryoshka import normalize
from ..results import Cost
from ..search import count_rerank
from ..store import BlockStore
from .ivf_lists import CODECS, code_bytes, list_means, make_lists, pq_spec

_F32 = 4
_LANES = 64  # compiled funnels kept per index (plans × k)
# The stopping rule of an adaptive fast scan ('p<least>-<most>^<margin>', _fastscan.c's Stop): before opening
# each list past `least`, stop when  bar − c + DEPTH·(c₁ − c) + SPENT·ln(lists opened) > margin  (bar: the
# score the shortlist's items must beat; c: the next list's coarse term; c₁: the nearest list's). The weights
# were fitted once, on pkgsum's text-span pseudo-queries (the margin is what calibration sets per collection):
# at recall@10 0.95 the pkgsum queries opened 1.35× fewer items than a fixed probe, against 1.25× for the
# bar-to-next-list gap alone.
STOP_DEPTH, STOP_SPENT = 0.25, 0.03


class IVFIndex:
    """Inverted lists over a BlockStore's rows; `build` does the work."""

    kind = "p"

    def __init__(self, *, n_lists: int, centroid_dim: int, scan_dim: int, probe_dims=(), codec: str = "f32",
                 metric: str = "cosine", seed: int = 0, iterations: int = 20):
        for name, value in (("n_lists", n_lists), ("centroid_dim", centroid_dim), ("scan_dim", scan_dim),
                            *(("probe dim", d) for d in probe_dims)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        spec = pq_spec(codec)
        if codec not in CODECS and not spec:
            raise InvalidInputError(f"IVF list codec {codec!r} is not one of {list(CODECS)}, 'pq<bytes>' or "
                                    f"'pq<sub-spaces>x4fs'")
        if spec and scan_dim % spec[0]:
            raise InvalidInputError(f"IVF-PQ needs the scan dim ({scan_dim}) to be a multiple of the "
                                    f"{'code bytes' if spec[1] == 8 else 'sub-spaces'} ({spec[0]})")
        self.n_lists, self.centroid_dim, self.scan_dim, self.codec = n_lists, centroid_dim, scan_dim, codec
        self._pq, self._code_bytes = spec, code_bytes(codec, scan_dim)
        self.probe_dims = tuple(sorted({centroid_dim, *probe_dims}))
        self.metric, self.seed, self.iterations = metric, seed, iterations
        self._lanes: dict[tuple, _Lane] = {}  # search_one's, by plan, keeps and metric

    def build(self, store: BlockStore, *, progress: bool = False) -> "IVFIndex":
        """Cluster every stored row on the centroid prefix and fill the lists.

        For cosine the prefixes are normalised and k-means is spherical.
        """
        nested = self.codec != "f32" or self.scan_dim in store.nesting  # float32 lists copy whole blocks
        if not nested or max(*self.probe_dims, self.scan_dim) > store.dim:
            raise InvalidInputError(
                f"scan_dim {self.scan_dim} must be one of the nesting dims {store.nesting} (float32 lists; coded "
                f"lists any dim up to {store.dim}) and centroid dims {list(self.probe_dims)} at most {store.dim}"
            )
        if store.count < self.n_lists:
            raise InvalidInputError(f"n_lists {self.n_lists} exceeds the {store.count} stored rows")
        prefix = self._prefix(store, self.centroid_dim, 0)
        kmeans = faiss.Kmeans(self.centroid_dim, self.n_lists, niter=self.iterations, seed=self.seed,
                              spherical=self.metric == "cosine", max_points_per_centroid=256, verbose=progress)
        kmeans.train(prefix)
        lists = nearest_list(kmeans.centroids, prefix, self.metric)
        self.centroids_ = {d: self._means(store, d, lists) for d in self.probe_dims if d != self.centroid_dim}
        self.centroids_[self.centroid_dim] = kmeans.centroids.astype(np.float32)
        self.biases_ = probe_biases(self.centroids_, self.metric)
        self.lists_ = make_lists(self.n_lists, self.scan_dim, self.codec, self.seed, self._faiss_metric)
        self._lanes.clear()  # new centroids and lists
        if self.codec == "f32":
            return self._add(store, 0, lists)
        scan_prefix = self._prefix(store, self.scan_dim, 0)
        self.lists_.train(scan_prefix, lists)
        return self._add(store, 0, lists, scan_prefix)

    def _means(self, store: BlockStore, dim: int, lists: np.ndarray) -> np.ndarray:
        """Each list's mean `dim`-prefix (normalised for cosine): a centroid set for probing at `dim`."""
        means = list_means(self._prefix(store, dim, 0), lists, self.n_lists)
        return normalize(means) if self.metric == "cosine" else means

    def extend(self, store: BlockStore) -> "IVFIndex":
        """Put the rows stored since the last build or extend into their nearest lists."""
        if self.indexed_ < store.count:
            start = self.indexed_
            self._add(store, start, nearest_list(self.centroids_[self.centroid_dim],
                                                 self._prefix(store, self.centroid_dim, start), self.metric))
        return self

    def _add(self, store: BlockStore, start: int, lists: np.ndarray, scan_prefix: np.ndarray | None = None):
        """Put the rows from `start` on into `lists`; coded lists encode `scan_prefix` (their scan-dim
        prefixes, taken from the store when not given)."""
        rows = np.arange(start, store.count)
        if self.codec == "f32":
            self.lists_.add(store, rows, lists)
        else:
            self.lists_.add(self._prefix(store, self.scan_dim, start) if scan_prefix is None else scan_prefix,
                            rows, lists)
        self.indexed_ = self.lists_.count
        return self

    def _prefix(self, store: BlockStore, dim: int, start: int) -> np.ndarray:
        prefix = prefix_of(store, dim, start)
        return normalize(prefix) if self.metric == "cosine" else prefix

    @property
    def _faiss_metric(self) -> str:
        """How coded lists are scored: by distance for l2, else by inner product (of normalised prefixes for cosine)."""
        return "l2" if self.metric == "l2" else "ip"

    def _ranking(self, dots: np.ndarray, inv: np.ndarray) -> np.ndarray:
        """Ranking scores of float32 lists' candidates from their products and inverse prefix norms (the
        lists keep those): cosine p/‖x‖, l2 2p − ‖x‖² (‖x‖ as 1/inv, 0 for a zero prefix), ip p."""
        if self.metric == "cosine":
            return dots * inv
        if self.metric == "l2":
            return 2 * dots - np.divide(1, inv * inv, out=np.zeros_like(inv), where=inv > 0)
        return dots

    def _distances_scored(self, queries: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Coded lists' scores as the funnel ranks them: for l2, faiss's squared distances d as ‖q‖² − d
        (`queries`: the scan-dim prefixes, one per row of `scores`)."""
        if self.metric != "l2":
            return scores
        return np.einsum("ij,ij->i", queries, queries)[:, None] - scores if scores.ndim == 2 \
            else np.float32(np.dot(queries[0], queries[0])) - scores

    def save(self, path) -> None:
        """Centroid sets and lists; float32 list blocks are rebuilt from the store on load."""
        centroids = {f"centroids_{d}": c for d, c in self.centroids_.items()}
        with open(path, "wb") as f:
            np.savez(f, **centroids, **self.lists_.state())

    def load(self, path, store: BlockStore) -> "IVFIndex":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            self.centroids_ = {d: arrays[f"centroids_{d}"] for d in self.probe_dims}
        except (OSError, ValueError, KeyError) as exc:
            raise CollectionError(f"IVF index file {path} is missing or corrupt: {exc}") from None
        if any(c.shape != (self.n_lists, d) for d, c in self.centroids_.items()):
            raise CollectionError(f"IVF index file {path} does not match its recipe or the stored vectors")
        self.biases_ = probe_biases(self.centroids_, self.metric)
        self.lists_ = make_lists(self.n_lists, self.scan_dim, self.codec, self.seed, self._faiss_metric)
        self._lanes.clear()  # new centroids and lists
        self.lists_.restore(arrays, store, path)
        self.indexed_ = self.lists_.count
        return self

    def candidates(self, store: BlockStore, query: np.ndarray, stage, keep: int, cost):
        """Rows of the `stage.effort` nearest lists and their scores on `stage.dim` dims: exact partial
        products from float32 lists, the best `keep` by approximate scores from coded ones."""
        lists = self._stage_probe(query, stage)
        if self.codec == "f32":
            self._count_probe(cost, stage, len(lists))
            self._check_scan(stage.dim, [hi for _, hi in self.lists_.bounds])
            rows, dots, inv = self.lists_.scan(query, lists, stage.dim)
            cost.items_scanned += len(rows)
            cost.multiply_adds += len(rows) * stage.dim
            cost.bytes_read += len(rows) * (stage.dim + (1 if self.metric != "ip" else 0)) * _F32
            return rows, self._ranking(dots, inv), dots
        self._check_scan(stage.dim, [self.scan_dim])
        rows, scores, opened, scanned = self.lists_.scan(query, lists, keep, _stop(stage, len(lists)))
        scores = self._distances_scored(query[None, : self.scan_dim], scores)
        counted = len(lists) if stage.margin is None else opened  # a stopping rule counts the lists it opened
        self._count_probe(cost, stage, counted)
        self._count_coded(cost, counted, scanned)
        return rows, scores, None

    def _stage_probe(self, query: np.ndarray, stage) -> np.ndarray:
        """The lists `stage` probes for one query."""
        self._check_adaptive(stage)
        least = None if stage.spread is None else stage.least  # a stopping rule probes `effort` lists, then stops
        return self._probe(query, stage.effort, stage.probe_dim or self.centroid_dim, least, stage.spread,
                           ranked=stage.margin is not None)

    def _count_probe(self, cost, stage, n_lists: int, queries: int = 1) -> None:
        """The work of `queries` probes: each query's product with every centroid at the probe dim; `n_lists`
        probed in all."""
        probe_dim = stage.probe_dim or self.centroid_dim
        cost.multiply_adds += queries * self.n_lists * probe_dim
        cost.bytes_read += queries * self.n_lists * probe_dim * _F32
        cost.lists_probed += n_lists

    def _count_coded(self, cost, n_lists: int, scanned: int, queries: int = 1) -> None:
        """The work of scanning `scanned` coded items in `n_lists` lists, for `queries` queries in all."""
        cost.items_scanned += scanned
        if spec := self._pq:  # a table of 2^bits entries per sub-space per query, a dot per list, M adds per item
            cost.multiply_adds += queries * 2 ** spec[1] * self.scan_dim + n_lists * self.scan_dim + scanned * spec[0]
            cost.bytes_read += queries * 2 ** spec[1] * self.scan_dim * _F32
        else:
            cost.multiply_adds += scanned * self.scan_dim
        cost.bytes_read += scanned * self._code_bytes

    def search_one(self, store: BlockStore, query: np.ndarray, plan, keeps: list[int], metric: str, cost):
        """One query's whole funnel in one compiled call (probe aside), where it can run so: fast-scan lists
        scored by inner product, and every later stage reading whole store blocks. Returns (rows, scores,
        candidates per stage) with the work counted in `cost`, as the general path would give and count them;
        None where it cannot run, or found fewer than k (the general path then falls back)."""
        key = (plan.text, *keeps, metric)
        lane = self._lanes.get(key)
        if lane is None or lane.store is not store or lane.maps != store.maps:
            if len(self._lanes) >= _LANES:
                self._lanes.clear()
            lane = self._lanes[key] = self._lane(store, plan, keeps, metric)
        if lane.stages is None:
            return None
        start = time.perf_counter()
        lists = np.empty(lane.nprobe, dtype=np.int64)
        probed = _kernels.probe(lane.centroids, query, lane.nprobe, lists, *lane.adaptive)
        rows, scores = np.empty(lane.k, dtype=np.int64), np.empty(lane.k, dtype=np.float32)
        kept, scanned, opened, seconds = self.lists_.search(query, lists[:probed], keeps[0], lane.stages, rows,
                                                            scores, lane.stop)
        if kept < lane.k:
            return None
        if lane.stop is not None:
            probed = opened
        cost.lists_probed += probed
        self._count_coded(cost, probed, scanned)
        if scanned >= keeps[0]:  # as almost always: every stage re-ranks as many rows as the plan says
            counts = lane.counts
            cost.multiply_adds += lane.multiply_adds
            cost.bytes_read += lane.bytes_read
        else:
            self._count_probe(cost, plan.stages[0], 0)
            counts = _lane_work(self, plan, keeps, metric, cost, scanned)
        cost.stage_seconds[0] += time.perf_counter() - start - sum(seconds[1:])
        for n in range(1, len(keeps)):
            cost.stage_seconds[n] += seconds[n]
        return rows, scores, counts

    def _lane(self, store: BlockStore, plan, keeps: list[int], metric: str) -> "_Lane":
        """What `search_one` needs for this plan, k and store state, made once (stages None: it cannot run)."""
        state, first = (store, store.maps), plan.stages[0]
        if self.codec == "f32" or not self.lists_.fused or first.dim != self.scan_dim or len(keeps) == 1 \
                or store.direct is not None:  # a plan that ends on the codes, or rows read from disk: general path
            return _Lane(*state)
        stages, lo, last = [], 0, len(keeps) - 1
        for n in range(1, len(keeps)):
            stage = plan.stages[n]
            if stage.codec or not store.whole_blocks(lo, stage.dim):
                return _Lane(*state)
            layout, norms, stride = store.read_plan(lo, stage.dim, metric, keeps[n - 1])
            stages.append((layout, norms, stride, keeps[n], -1.0 if n == last and metric != "ip" else 1.0))
            lo = stage.dim
        probe_dim = first.probe_dim or self.centroid_dim
        if probe_dim not in self.centroids_:
            return _Lane(*state)  # the general path names the missing centroid set
        nprobe = min(first.effort, self.n_lists)
        adaptive = () if first.spread is None else (min(first.least, nprobe), first.spread)
        if first.margin is not None:  # the lists best first: the scan opens them in this order until it stops
            adaptive = (nprobe, -1.0, None, True)
        work = Cost(queries=1)
        self._count_probe(work, first, 0)
        counts = _lane_work(self, plan, keeps, metric, work, keeps[0])
        return _Lane(*state, tuple(stages), self.centroids_[probe_dim], nprobe, adaptive, _stop(first, nprobe),
                     keeps[-1], counts, work.multiply_adds, work.bytes_read)

    def candidates_batch(self, store: BlockStore, queries: np.ndarray, stage, keep: int, cost):
        """`candidates` for many queries: one GEMM with the centroids picks every query's lists; float32
        lists are scanned list by list, one GEMM with the queries probing each (every query's candidates
        in a row, -1 past its own), coded ones by one faiss call for all the queries."""
        probe_dim = stage.probe_dim or self.centroid_dim
        self._check_adaptive(stage)
        if stage.margin is None:
            lists = self.probe_batch(queries, stage.effort, probe_dim, stage.least, stage.spread)
        else:  # each query's lists best first, as one query at a time ranks them (the scan stops in that order)
            lists = np.stack([self._stage_probe(query, stage) for query in queries])
        if self.codec == "f32":
            self._count_probe(cost, stage, int(np.count_nonzero(lists >= 0)), len(queries))
            self._check_scan(stage.dim, [hi for _, hi in self.lists_.bounds])
            rows, dots, inv = self.lists_.scan_batch(queries, lists, stage.dim)
            scanned = int(np.count_nonzero(rows >= 0))
            cost.items_scanned += scanned
            cost.multiply_adds += scanned * stage.dim
            cost.bytes_read += scanned * (stage.dim + (1 if self.metric != "ip" else 0)) * _F32
            return rows, self._ranking(dots, inv), dots
        self._check_scan(stage.dim, [self.scan_dim])
        rows, scores, sizes, opened = self.lists_.scan_batch(queries, lists, keep, _stop(stage, lists.shape[1]))
        scores = self._distances_scored(queries[:, : self.scan_dim], scores)
        if stage.margin is None:
            self._count_probe(cost, stage, int(np.count_nonzero(lists >= 0)), len(queries))
            self._count_coded(cost, lists.size, int(sizes.sum()), len(queries))
        else:  # a stopping rule counts the lists it opened
            self._count_probe(cost, stage, int(opened.sum()), len(queries))
            self._count_coded(cost, int(opened.sum()), int(sizes.sum()), len(queries))
        return rows, scores, None

    def candidate_width(self, stage, keep: int) -> int:
        """The most candidates `candidates_batch` gives a query: its keep from coded lists, every item
        of the largest lists it could probe from float32 ones."""
        if self.codec != "f32":
            return keep
        return max(1, int(np.sort(self.lists_.sizes())[::-1][: stage.effort].sum()))

    def _check_scan(self, dim: int, dims: list[int]) -> None:
        if dim not in dims:
            raise InvalidInputError(f"this IVF index scans {self.codec} lists at d{', d'.join(map(str, dims))}, "
                                    f"not at d{dim}")

    def probe(self, query: np.ndarray, nprobe: int, dim: int | None = None) -> np.ndarray:
        """The `nprobe` lists whose centroids are nearest the query's prefix at `dim` (the clustering dim
        by default; any dim the index holds a centroid set for), in ascending order."""
        return self._probe(query, nprobe, dim or self.centroid_dim)

    def _probe(self, query: np.ndarray, nprobe: int, dim: int, least: int | None = None,
               spread: float | None = None, ranked: bool = False):
        """`probe` (adaptive with `spread`: only the lists whose centroid is within `spread` in cosine of
        the nearest one, at least `least`; `ranked`: best first)."""
        if dim not in self.centroids_:
            raise InvalidInputError(f"this IVF index probes with centroids at d{', d'.join(map(str, self.probe_dims))}"
                                    f", not at d{dim}")
        lists = np.empty(min(nprobe, self.n_lists), dtype=np.int64)  # ascending: scanned in list order
        bias = self.biases_.get(dim)
        if spread is None and bias is None and not ranked:
            kept = _kernels.probe(self.centroids_[dim], query, len(lists), lists)
        else:
            least = len(lists) if spread is None else min(least, len(lists))
            kept = _kernels.probe(self.centroids_[dim], query, len(lists), lists, least,
                                     -1.0 if spread is None else spread, bias, ranked)
        return lists[:kept]

    def probe_batch(self, queries: np.ndarray, nprobe: int, dim: int | None = None, least: int | None = None,
                    spread: float | None = None) -> np.ndarray:
        """`probe` for many queries, (queries × nprobe): one GEMM with the centroids. Adaptive (`spread`),
        a query's lists past its own are -1."""
        dim = dim or self.centroid_dim
        if dim not in self.centroids_:
            raise InvalidInputError(f"this IVF index probes with centroids at d{', d'.join(map(str, self.probe_dims))}"
                                    f", not at d{dim}")
        nprobe = min(nprobe, self.n_lists)
        if nprobe == self.n_lists and spread is None:
            return np.tile(np.arange(self.n_lists), (len(queries), 1))
        scores = queries[:, :dim] @ self.centroids_[dim].T
        if dim in self.biases_:
            scores += self.biases_[dim]
        lists = np.argpartition(-scores, nprobe - 1, axis=1)[:, :nprobe] if nprobe < self.n_lists \
            else np.tile(np.arange(self.n_lists), (len(queries), 1))
        if spread is not None:  # as the one-query kernel: within spread·‖q‖ of the best, at least `least`
            picked = np.take_along_axis(scores, lists, axis=1)
            order = np.lexsort((lists, -picked), axis=1)
            lists, picked = np.take_along_axis(lists, order, axis=1), np.take_along_axis(picked, order, axis=1)
            floor = picked[:, :1] - np.float32(spread) * np.linalg.norm(queries[:, :dim], axis=1, keepdims=True)
            kept = np.maximum(np.count_nonzero(picked >= floor, axis=1), min(least, nprobe))
            lists = np.where(np.arange(nprobe) < kept[:, None], lists, -1)
            return lists  # coded lists skip -1
        return np.sort(lists, axis=1)

    def _check_adaptive(self, stage) -> None:
        if stage.spread is not None and self.codec == "f32":
            raise InvalidInputError(f"adaptive probing ({stage}) needs coded lists (an ivf recipe with /int8, /f16, "
                                    "/pq…), not float32 ones")
        if stage.margin is not None and not getattr(self.lists_, "fused", False):
            raise InvalidInputError(f"a stopping margin ({stage}) needs 4-bit fast-scan lists scored by inner product "
                                    f"(an ivf recipe with /pq<m>x4fs on a cosine or ip collection), not {self.codec} "
                                    f"lists on {self.metric}")

    def list_sizes(self) -> np.ndarray:
        return self.lists_.sizes()

    def resident_bytes(self) -> int:
        """RAM the index holds: the centroid sets and the lists."""
        return sum(c.nbytes for c in self.centroids_.values()) + self.lists_.resident_bytes()


def prefix_of(store: BlockStore, dim: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """The first `dim` dims of the stored rows [start, stop), as one contiguous array."""
    parts = [block[start:stop, : min(hi, dim) - lo] for (lo, hi), block in zip(store.bounds, store.blocks) if lo < dim]
    return np.ascontiguousarray(np.hstack(parts))


def nearest_list(centroids: np.ndarray, vectors: np.ndarray, metric: str = "ip") -> np.ndarray:
    """Each vector's nearest centroid (the list it joins): by distance for l2, else by inner product."""
    index = faiss.IndexFlatL2(centroids.shape[1]) if metric == "l2" else faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    return index.search(vectors, 1)[1][:, 0]


def probe_biases(centroids: dict[int, np.ndarray], metric: str) -> dict[int, np.ndarray]:
    """Per centroid set, what a probe adds to the query's products with the centroids: −‖c‖²/2 for l2 (the
    best is then the nearest centroid, and a score gap is half a gap in squared distance), none otherwise."""
    if metric != "l2":
        return {}
    return {d: (-0.5 * np.einsum("ij,ij->i", c, c)).astype(np.float32) for d, c in centroids.items()}


@dataclass(frozen=True, slots=True)
class _Lane:
    """One plan's compiled funnel on one store state (`IVFIndex.search_one`): the re-rank stages, the probe's
    arguments, k, and the candidates and fixed work (probe and re-ranks) of a query whose lists hold enough."""

    store: BlockStore  # the store and its maps it was made for (the layouts point into them)
    maps: int
    stages: tuple | None = None  # None: the plan cannot run this way
    centroids: np.ndarray | None = None
    nprobe: int = 0
    adaptive: tuple = ()  # the probe's further arguments: (least, spread), or the lists ranked for a stopping rule
    stop: tuple | None = None  # the fast scan's stopping rule (least, margin, depth, spent), if any
    k: int = 0
    counts: list[int] = field(default_factory=list)
    multiply_adds: int = 0
    bytes_read: int = 0


def _stop(stage, probed: int) -> tuple | None:
    """The fast-scan kernel's stopping rule for `stage` over `probed` lists (None: open every list)."""
    if stage.margin is None:
        return None
    return (min(stage.least, probed), stage.margin, STOP_DEPTH, STOP_SPENT)


def _lane_work(index: IVFIndex, plan, keeps: list[int], metric: str, cost, scanned: int) -> list[int]:
    """Candidates per stage of a query whose probed lists held `scanned` items; the re-ranks' work counted."""
    counts, lo = [min(keeps[0], scanned)], 0
    for n in range(1, len(keeps)):
        counts.append(min(keeps[n - 1], counts[-1]))
        count_rerank(cost, counts[n], lo, plan.stages[n].dim, metric)
        lo = plan.stages[n].dim
    return counts
