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


class GraphIndex:
    """HNSW over the `dim`-prefix of a BlockStore's rows; `build` does the work."""

    kind = "g"

    def __init__(self, *, dim: int, neighbors: int = 32, build_beam: int = 40, metric: str = "cosine"):
        for name, value in (("dim", dim), ("neighbors", neighbors), ("build_beam", build_beam)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        self.dim, self.neighbors, self.build_beam, self.metric = dim, neighbors, build_beam, metric

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
        """The graph's `keep` nearest rows and their similarity on the graph's prefix."""
        if stage.dim != self.dim:
            raise InvalidInputError(f"this graph is built on d{self.dim}; the plan asks for d{stage.dim}")
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(stage.effort, keep)
        stats = faiss.cvar.hnsw_stats
        stats.reset()
        scores, found = self.graph_.search(np.ascontiguousarray(query[None, : self.dim]),
                                           min(keep, self.indexed_), params=params)
        valid = found[0] >= 0
        cost.multiply_adds += stats.ndis * self.dim
        cost.bytes_read += stats.ndis * self.dim * 4
        return found[0][valid], scores[0][valid], None

    def resident_bytes(self) -> int:
        """RAM the graph holds: its prefix vectors and its neighbour lists."""
        hnsw = self.graph_.hnsw
        links = faiss.vector_to_array(hnsw.neighbors).nbytes + faiss.vector_to_array(hnsw.offsets).nbytes
        return self.graph_.ntotal * self.dim * 4 + links + faiss.vector_to_array(hnsw.levels).nbytes
