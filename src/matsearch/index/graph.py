"""A graph (faiss HNSW) on a short prefix of the stored vectors; the funnel re-ranks.

AdANNS's graph + re-rank: the graph holds only a `dim`-prefix copy (normalised
for cosine), so it is small and quick to build and to walk; its candidates are
then re-scored on longer prefixes from the memory-mapped store. Rows added to
the store later are inserted into the graph (`extend`).
"""

from __future__ import annotations

import faiss
import numpy as np
from tqdm.auto import tqdm

from ..errors import CollectionError, InvalidInputError
from ..matryoshka import normalize
from ..store import BlockStore
from .ivf import prefix_of

_ADD_CHUNK = 10_000  # rows per insertion call, so a progress bar can follow
_STATS = faiss.cvar.hnsw_stats  # faiss's distance counter, read for the cost record


class GraphIndex:
    """HNSW over the `dim`-prefix of a BlockStore's rows; `build` does the work."""

    kind = "g"

    def __init__(self, *, dim: int, neighbors: int = 32, build_beam: int = 40, metric: str = "cosine"):
        for name, value in (("dim", dim), ("neighbors", neighbors), ("build_beam", build_beam)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        self.dim, self.neighbors, self.build_beam, self.metric = dim, neighbors, build_beam, metric
        self._beams: dict[int, faiss.SearchParametersHNSW] = {}

    def build(self, store: BlockStore, *, progress: bool = False) -> "GraphIndex":
        """Insert every stored row's prefix into a new HNSW graph."""
        if self.dim > store.dim:
            raise InvalidInputError(f"graph dim {self.dim} exceeds the stored vectors' {store.dim}")
        self.graph_ = faiss.IndexHNSWFlat(self.dim, self.neighbors, faiss.METRIC_INNER_PRODUCT)
        self.graph_.hnsw.efConstruction = self.build_beam
        self.indexed_ = 0
        return self.extend(store, progress=progress)

    def extend(self, store: BlockStore, *, progress: bool = False) -> "GraphIndex":
        """Insert the rows stored since the last build or extend."""
        prefix = prefix_of(store, self.dim, self.indexed_)
        if self.metric == "cosine":
            prefix = normalize(prefix)
        with tqdm(total=len(prefix), desc=f"hnsw{self.neighbors}@d{self.dim}", disable=not progress) as bar:
            for start in range(0, len(prefix), _ADD_CHUNK):
                self.graph_.add(prefix[start : start + _ADD_CHUNK])
                bar.update(min(_ADD_CHUNK, len(prefix) - start))
        self.indexed_ = self.graph_.ntotal
        return self

    def save(self, path) -> None:
        faiss.write_index(self.graph_, str(path))

    def load(self, path, store: BlockStore) -> "GraphIndex":
        try:
            self.graph_ = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise CollectionError(f"graph index file {path} is missing or corrupt: {str(exc).splitlines()[0]}") from None
        if self.graph_.d != self.dim or self.graph_.ntotal > store.count:
            raise CollectionError(f"graph index file {path} does not match its recipe or the stored vectors")
        self.indexed_ = self.graph_.ntotal
        return self

    def candidates(self, store: BlockStore, query: np.ndarray, stage, keep: int, cost):
        """The graph's `keep` nearest rows, their similarity on the graph's prefix, and their
        partial products on it (cosine similarity times the stored prefix norm), so the
        funnel's re-rank adds only the dims past the graph's."""
        if stage.dim != self.dim:
            raise InvalidInputError(f"this graph is built on d{self.dim}; the plan asks for d{stage.dim}")
        _STATS.reset()
        scores, found = self.graph_.search(query[None, : self.dim], min(keep, self.indexed_),
                                           params=self._params(max(stage.effort, keep)))
        rows, scores = found[0], scores[0]
        if rows[-1] < 0:  # fewer reachable rows than asked
            valid = rows >= 0
            rows, scores = rows[valid], scores[valid]
        visited = _STATS.ndis
        cost.multiply_adds += visited * self.dim
        cost.bytes_read += visited * self.dim * 4
        if self.metric != "cosine":
            return rows, scores, scores
        inv = store.inv_prefix_norms(self.dim, rows)
        return rows, scores, np.divide(scores, inv, out=np.zeros_like(scores), where=inv > 0)

    def _params(self, beam: int):
        """Search parameters for a beam, made once: building them costs as much as a short search."""
        params = self._beams.get(beam)
        if params is None:
            params = self._beams[beam] = faiss.SearchParametersHNSW()
            params.efSearch = beam
        return params

    def resident_bytes(self) -> int:
        """RAM the graph holds: its prefix vectors and its neighbour lists."""
        hnsw = self.graph_.hnsw
        links = faiss.vector_to_array(hnsw.neighbors).nbytes + faiss.vector_to_array(hnsw.offsets).nbytes
        return self.graph_.ntotal * self.dim * 4 + links + faiss.vector_to_array(hnsw.levels).nbytes
