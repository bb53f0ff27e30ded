"""A graph (faiss HNSW) on a short prefix of the stored vectors; the funnel re-ranks.

AdANNS's graph + re-rank: the graph holds only a `dim`-prefix copy (normalised
for cosine), so it is small and quick to walk; its candidates are then
re-scored on longer prefixes from the memory-mapped store. As AdANNS-IVF
decouples the clustering dim from the scan dim, the graph's links may be built
on a shorter prefix (`build_dim`, held as int8 while linking so that it stays in
cache) than the one it stores and walks: building is the costly part, and a
short coarse prefix finds nearly the same neighbourhoods. The stored copy may be
float32, float16 or int8 (per-dim ranges). A float32 copy hands the re-rank
exact partial products, so it reads only the dims past the graph's; with a
lossy copy the re-rank recomputes every candidate's products from the store, so
final scores stay exact either way. Rows added to the store later are inserted
into the graph (`extend`). For the l2 metric the graph is linked and walked by squared
distance d (faiss METRIC_L2) and its candidates handed on scored ‖q‖² − d.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np
from tqdm.auto import tqdm

from ..errors import CollectionError, InvalidInputError
from ..matryoshka import normalize
from ..store import BlockStore
from .faiss_file import read_faiss_index
from .ivf import prefix_of
from .ivf_lists import SCALAR_QUANTIZERS

_ADD_CHUNK = 10_000  # rows per insertion call, so a progress bar can follow
_TINY = np.float32(1e-30)
_STATS = faiss.cvar.hnsw_stats  # faiss's distance counter, read for the cost record
_STATS_LOCK = threading.Lock()  # the counter is one per process: graph searches take turns
CODECS = {"f32": 4, "f16": 2, "int8": 1}  # bytes per stored dim
_FAISS_METRICS = {"cosine": faiss.METRIC_INNER_PRODUCT, "ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


class GraphIndex:
    """HNSW over the `dim`-prefix of a BlockStore's rows, linked on the `build_dim`-prefix."""

    kind = "g"

    def __init__(self, *, dim: int, neighbors: int = 32, build_beam: int = 40, metric: str = "cosine",
                 build_dim: int | None = None, codec: str = "f32"):
        build_dim = dim if build_dim is None else build_dim
        for name, value in (("dim", dim), ("neighbors", neighbors), ("build_beam", build_beam),
                            ("build_dim", build_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if build_dim > dim:
            raise InvalidInputError(f"the graph's build dim {build_dim} exceeds its search dim {dim}")
        if codec not in CODECS:
            raise InvalidInputError(f"graph codec {codec!r} is not one of {sorted(CODECS)}")
        self.dim, self.neighbors, self.build_beam, self.metric = dim, neighbors, build_beam, metric
        self.build_dim, self.codec = build_dim, codec
        self._beams: dict[int, faiss.SearchParametersHNSW] = {}

    def build(self, store: BlockStore, *, progress: bool = False) -> "GraphIndex":
        """Link every stored row in a new HNSW graph, then store the rows' `dim`-prefixes in it."""
        if self.dim > store.dim:
            raise InvalidInputError(f"graph dim {self.dim} exceeds the stored vectors' {store.dim}")
        prefix = self._prefix(store, 0, self.dim)
        self.graph_ = self._empty(self.dim, prefix)
        if self.build_dim == self.dim:
            self._insert(self.graph_, prefix, progress)
        else:
            short = self._prefix(store, 0, self.build_dim)
            builder = self._empty(self.build_dim, short, codec="int8")
            self._insert(builder, short, progress)
            self.graph_.hnsw = builder.hnsw  # the links, copied; the builder's short copy is dropped
            faiss.downcast_index(self.graph_.storage).add(prefix)
            self.graph_.ntotal = builder.ntotal
        self.indexed_ = self.graph_.ntotal
        return self

    def extend(self, store: BlockStore, *, progress: bool = False) -> "GraphIndex":
        """Insert the rows stored since the last build or extend (linked on the graph's own copy)."""
        self._insert(self.graph_, self._prefix(store, self.indexed_, self.dim), progress)
        self.indexed_ = self.graph_.ntotal
        return self

    def _prefix(self, store: BlockStore, start: int, dim: int) -> np.ndarray:
        prefix = prefix_of(store, dim, start)
        return normalize(prefix) if self.metric == "cosine" else prefix

    def _empty(self, dim: int, sample: np.ndarray, codec: str | None = None):
        """A new HNSW index over `dim` dims in `codec` (this graph's by default), trained on `sample`."""
        codec, metric = codec or self.codec, _FAISS_METRICS[self.metric]
        if codec == "f32":
            graph = faiss.IndexHNSWFlat(dim, self.neighbors, metric)
        else:
            graph = faiss.IndexHNSWSQ(dim, SCALAR_QUANTIZERS[codec], self.neighbors, metric)
            graph.train(sample)
        graph.hnsw.efConstruction = self.build_beam
        return graph

    def _insert(self, graph, prefix: np.ndarray, progress: bool) -> None:
        with tqdm(total=len(prefix), desc=f"hnsw{self.neighbors}@d{graph.d}", disable=not progress) as bar:
            for start in range(0, len(prefix), _ADD_CHUNK):
                graph.add(prefix[start : start + _ADD_CHUNK])
                bar.update(min(_ADD_CHUNK, len(prefix) - start))

    def save(self, path) -> None:
        faiss.write_index(self.graph_, str(path))

    def load(self, path, store: BlockStore) -> "GraphIndex":
        self.graph_ = read_faiss_index(path, "graph index", self.dim, store.count)
        if _codec_of(self.graph_) != self.codec:
            raise CollectionError(f"graph index file {path} does not match its recipe or the stored vectors")
        self.indexed_ = self.graph_.ntotal
        return self

    def candidates(self, store: BlockStore, query: np.ndarray, stage, keep: int, cost):
        """The graph's `keep` nearest rows, their ranking scores on the graph's prefix, and their
        partial products on it (see `_scored`), so the funnel's re-rank adds only the dims past the graph's."""
        if stage.dim != self.dim:
            raise InvalidInputError(f"this graph is built on d{self.dim}; the plan asks for d{stage.dim}")
        scores, found, visited = self._walk(query[None, : self.dim], min(keep, self.indexed_),
                                            max(stage.effort, keep))
        rows, scores = found[0], scores[0]
        if rows[-1] < 0:  # fewer reachable rows than asked
            valid = rows >= 0
            rows, scores = rows[valid], scores[valid]
        cost.items_scanned += visited
        cost.multiply_adds += visited * self.dim
        cost.bytes_read += visited * self.dim * CODECS[self.codec]
        head = query[: self.dim]
        return (rows, *self._scored(store, rows, scores, np.float32(np.dot(head, head))))

    def candidates_batch(self, store: BlockStore, queries: np.ndarray, stage, keep: int, cost):
        """`candidates` for many queries in one graph search: (queries × keep) rows (-1 past the
        reachable ones), similarities and partial products."""
        if stage.dim != self.dim:
            raise InvalidInputError(f"this graph is built on d{self.dim}; the plan asks for d{stage.dim}")
        scores, rows, visited = self._walk(np.ascontiguousarray(queries[:, : self.dim]), min(keep, self.indexed_),
                                           max(stage.effort, keep))
        cost.items_scanned += visited
        cost.multiply_adds += visited * self.dim
        cost.bytes_read += visited * self.dim * CODECS[self.codec]
        heads = queries[:, : self.dim]
        return (rows, *self._scored(store, rows, scores, np.einsum("ij,ij->i", heads, heads)[:, None]))

    def _scored(self, store: BlockStore, rows: np.ndarray, scores: np.ndarray, squares):
        """(ranking scores, partial products on the graph's prefix, or None from a lossy copy: the re-rank then
        starts from dim 0) of candidate `rows` (-1: none) from faiss's `scores`. Cosine's products are the
        similarity times the stored prefix norm; l2's faiss distances d become ‖q‖² − d and the products
        (‖q‖² + ‖x‖² − d) / 2, `squares` being ‖q‖² (a column for a batch)."""
        if self.metric == "l2":
            scores = squares - scores
        if self.codec != "f32" or self.metric == "ip":
            return scores, None if self.codec != "f32" else scores
        held = np.maximum(rows, 0).ravel()
        if self.metric == "l2":
            return scores, (scores + store.prefix_squares(self.dim, held).reshape(rows.shape)) / 2
        inv = store.inv_prefix_norms(self.dim, held).reshape(rows.shape)
        return scores, scores / np.maximum(inv, _TINY)  # an all-zero prefix scores 0 either way

    def candidate_width(self, stage, keep: int) -> int:
        """The most candidates `candidates_batch` gives a query."""
        return keep

    def _walk(self, queries: np.ndarray, keep: int, beam: int):
        """(similarities, rows, distances computed) of a graph search. faiss counts distances in one
        process-wide counter, so searches from several threads take turns to keep each count their own."""
        with _STATS_LOCK:
            _STATS.reset()
            scores, rows = self.graph_.search(queries, keep, params=self._params(beam))
            return scores, rows, _STATS.ndis

    def _params(self, beam: int):
        """Search parameters for a beam, made once: building them costs as much as a short search."""
        params = self._beams.get(beam)
        if params is None:
            params = self._beams[beam] = faiss.SearchParametersHNSW()
            params.efSearch = beam
        return params

    def resident_bytes(self) -> int:
        """RAM the graph holds: its prefix copy and its neighbour lists."""
        hnsw = self.graph_.hnsw
        links = sum(faiss.vector_to_array(a).nbytes for a in (hnsw.neighbors, hnsw.offsets, hnsw.levels))
        return self.graph_.ntotal * self.dim * CODECS[self.codec] + links


def _codec_of(graph) -> str | None:
    if isinstance(graph, faiss.IndexHNSWFlat):
        return "f32"
    if isinstance(graph, faiss.IndexHNSWSQ):
        qtype = faiss.downcast_index(graph.storage).sq.qtype
        return next((name for name, q in SCALAR_QUANTIZERS.items() if q == qtype), None)
    return None
