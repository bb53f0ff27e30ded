"""AdANNS-IVF: clustering dim and scan dim decoupled.

Centroids are learned (faiss k-means) on the `centroid_dim`-prefix of the stored
vectors and every item joins its nearest centroid there. The index keeps a copy
of the stored prefix blocks up to `scan_dim`, with rows grouped list by list, so
a probed list is a contiguous run that a query scans at any d_s ≤ scan_dim it
chooses. Rows added to the store later join their nearest lists (`extend`),
exactly where a build with the same centroids would have put them.
"""

from __future__ import annotations

import faiss
import numpy as np

from ..errors import CollectionError, InvalidInputError
from ..matryoshka import normalize
from ..store import BlockStore, _scan
from ..topk import top_k


class IVFIndex:
    """Inverted lists over a BlockStore's rows; `build` does the work."""

    kind = "p"

    def __init__(self, *, n_lists: int, centroid_dim: int, scan_dim: int, metric: str = "cosine",
                 seed: int = 0, iterations: int = 20):
        for name, value in (("n_lists", n_lists), ("centroid_dim", centroid_dim), ("scan_dim", scan_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        self.n_lists, self.centroid_dim, self.scan_dim = n_lists, centroid_dim, scan_dim
        self.metric, self.seed, self.iterations = metric, seed, iterations

    def build(self, store: BlockStore, *, progress: bool = False) -> "IVFIndex":
        """Cluster every stored row on the centroid prefix and group rows by list.

        For cosine the prefixes are normalised and k-means is spherical.
        """
        if self.scan_dim not in store.nesting or self.centroid_dim > store.dim:
            raise InvalidInputError(
                f"scan_dim {self.scan_dim} must be one of the nesting dims {store.nesting} and "
                f"centroid_dim {self.centroid_dim} at most {store.dim}"
            )
        if store.count < self.n_lists:
            raise InvalidInputError(f"n_lists {self.n_lists} exceeds the {store.count} stored rows")
        prefix = self._prefix(store, 0)
        kmeans = faiss.Kmeans(self.centroid_dim, self.n_lists, niter=self.iterations, seed=self.seed,
                              spherical=self.metric == "cosine", max_points_per_centroid=256, verbose=progress)
        kmeans.train(prefix)
        self.centroids_ = kmeans.centroids.astype(np.float32)
        self.list_rows_ = np.empty(0, dtype=np.int64)
        self.offsets_ = np.zeros(self.n_lists + 1, dtype=np.int64)
        return self._assign(store, np.arange(store.count), _nearest(self.centroids_, prefix))

    def extend(self, store: BlockStore) -> "IVFIndex":
        """Put the rows stored since the last build or extend into their nearest lists."""
        if self.indexed_ < store.count:
            rows = np.arange(self.indexed_, store.count)
            self._assign(store, rows, _nearest(self.centroids_, self._prefix(store, self.indexed_)))
        return self

    def _prefix(self, store: BlockStore, start: int) -> np.ndarray:
        prefix = prefix_of(store, self.centroid_dim, start)
        return normalize(prefix) if self.metric == "cosine" else prefix

    def _assign(self, store: BlockStore, rows: np.ndarray, lists: np.ndarray) -> "IVFIndex":
        """Merge `rows` (all above the indexed ones) into `lists`; each list stays in row order."""
        current = np.repeat(np.arange(self.n_lists), np.diff(self.offsets_))
        order = np.argsort(np.concatenate([current, lists]), kind="stable")
        list_rows = np.concatenate([self.list_rows_, rows])[order]
        sizes = np.diff(self.offsets_) + np.bincount(lists, minlength=self.n_lists)
        return self._group(store, list_rows, np.concatenate([[0], np.cumsum(sizes)]))

    def _group(self, store: BlockStore, list_rows: np.ndarray, offsets: np.ndarray) -> "IVFIndex":
        """Copy the stored prefix blocks up to scan_dim in list order."""
        self.list_rows_, self.offsets_ = list_rows, offsets
        n_blocks = store.nesting.index(self.scan_dim) + 1
        self.bounds_ = store.bounds[:n_blocks]
        self.blocks_ = [np.ascontiguousarray(b[list_rows]) for b in store.blocks[:n_blocks]]
        self.inv_norms_ = [norms[list_rows] for norms in store.inv_norms[:n_blocks]]
        self.indexed_ = len(list_rows)
        return self

    def save(self, path) -> None:
        """Centroids and lists; the list-ordered blocks are rebuilt from the store on load."""
        with open(path, "wb") as f:
            np.savez(f, centroids=self.centroids_, list_rows=self.list_rows_, offsets=self.offsets_)

    def load(self, path, store: BlockStore) -> "IVFIndex":
        try:
            with np.load(path, allow_pickle=False) as data:
                centroids, list_rows, offsets = data["centroids"], data["list_rows"], data["offsets"]
        except (OSError, ValueError, KeyError) as exc:
            raise CollectionError(f"IVF index file {path} is missing or corrupt: {exc}") from None
        if centroids.shape != (self.n_lists, self.centroid_dim) or len(offsets) != self.n_lists + 1 \
                or offsets[-1] != len(list_rows) or len(list_rows) > store.count:
            raise CollectionError(f"IVF index file {path} does not match its recipe or the stored vectors")
        self.centroids_ = centroids
        return self._group(store, list_rows, offsets)

    def candidates(self, store: BlockStore, query: np.ndarray, stage, keep: int, cost):
        """Rows of the `stage.effort` nearest lists, their scores and partial products on `stage.dim` dims."""
        lists = self.probe(query, stage.effort)
        rows, dots, inv = self.scan(query, lists, stage.dim)
        scanned = len(rows) * (stage.dim + (1 if self.metric == "cosine" else 0))
        cost.multiply_adds += self.n_lists * self.centroid_dim + len(rows) * stage.dim
        cost.bytes_read += (self.n_lists * self.centroid_dim + scanned) * 4
        cost.lists_probed += len(lists)
        return rows, dots * inv if self.metric == "cosine" else dots, dots

    def probe(self, query: np.ndarray, nprobe: int) -> np.ndarray:
        """The `nprobe` lists whose centroids are nearest the query's centroid prefix."""
        scores = self.centroids_ @ query[: self.centroid_dim]
        return top_k(scores, min(nprobe, self.n_lists), ordered=False)

    def scan(self, query: np.ndarray, lists: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, partial dots over dims [0, dim), inverse prefix norms at dim) of the probed lists."""
        if dim > self.scan_dim or dim not in [hi for _, hi in self.bounds_]:
            raise InvalidInputError(
                f"this IVF index scans at nesting dims up to {self.scan_dim}, not at d{dim}"
            )
        positions = np.concatenate([np.arange(self.offsets_[l], self.offsets_[l + 1]) for l in lists])
        dots = None
        for (lo, hi), block in zip(self.bounds_, self.blocks_):
            if lo >= dim:
                break
            value = _scan(block[positions], query[lo:hi])
            dots = value if dots is None else np.add(dots, value, out=dots)
        j = [hi for _, hi in self.bounds_].index(dim)
        return self.list_rows_[positions], dots, self.inv_norms_[j][positions]

    def list_sizes(self) -> np.ndarray:
        return np.diff(self.offsets_)

    def resident_bytes(self) -> int:
        """RAM the index holds: centroids, row ids, offsets, list-ordered blocks and norms."""
        arrays = [self.centroids_, self.list_rows_, self.offsets_, *self.blocks_, *self.inv_norms_]
        return sum(a.nbytes for a in arrays)


def prefix_of(store: BlockStore, dim: int, start: int = 0) -> np.ndarray:
    """The first `dim` dims of the stored rows from `start` on, as one contiguous array."""
    parts = [block[start:, : min(hi, dim) - lo] for (lo, hi), block in zip(store.bounds, store.blocks) if lo < dim]
    return np.ascontiguousarray(np.hstack(parts))


def _nearest(centroids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    return index.search(vectors, 1)[1][:, 0]
