"""Product quantisation on a prefix (AdANNS-OPQ): M bytes per item, re-ranked from the store.

The codes are built (faiss PQ, optionally with an OPQ rotation) on the `dim`-prefix
of the stored vectors, normalised for cosine (for l2 they score squared distances d, handed on
as ‖q‖² − d). Elastic prefixes put most of their
energy in the first dims, which starves PQ's later sub-spaces; plain PQ therefore
first deals the prefix's dims out to the M sub-spaces so each gets an equal share
of log-energy (a fixed permutation, no training; OPQ learns its own rotation). A query ranks every item by
asymmetric distance (one lookup table per query, M byte lookups per item) and
the funnel re-scores the best on longer prefixes. `best_prefix` picks, for a byte
budget, the prefix whose codes rank a sample best.
"""

from __future__ import annotations

import faiss
import numpy as np
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from ..matryoshka import normalize
from ..plan import Plan
from ..search import run_plan
from ..store import BlockStore
from .faiss_file import read_faiss_index
from .ivf import prefix_of

_ADD_CHUNK = 20_000
_TRAIN_SAMPLE = 50_000


class PQIndex:
    """PQ codes of `code_bytes` bytes on the `dim`-prefix of a BlockStore's rows."""

    kind = "q"

    def __init__(self, *, dim: int, code_bytes: int, opq: bool = False, metric: str = "cosine", seed: int = 0):
        for name, value in (("dim", dim), ("code_bytes", code_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if dim % code_bytes:
            raise InvalidInputError(f"PQ needs the dim ({dim}) to be a multiple of the code bytes ({code_bytes})")
        self.dim, self.code_bytes, self.opq, self.metric, self.seed = dim, code_bytes, opq, metric, seed

    def _prefix(self, store: BlockStore, start: int) -> np.ndarray:
        prefix = prefix_of(store, self.dim, start)
        return normalize(prefix) if self.metric == "cosine" else prefix

    def build(self, store: BlockStore, *, progress: bool = False) -> "PQIndex":
        """Train the codebooks on a sample of the stored prefixes and encode every row."""
        if self.dim > store.dim:
            raise InvalidInputError(f"PQ dim {self.dim} exceeds the stored vectors' {store.dim}")
        key = f"OPQ{self.code_bytes},PQ{self.code_bytes}" if self.opq else f"PQ{self.code_bytes}"
        prefix = self._prefix(store, 0)
        sample = np.random.default_rng(self.seed).choice(len(prefix), min(len(prefix), _TRAIN_SAMPLE), replace=False)
        sample = prefix[np.sort(sample)]
        metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        codes = faiss.index_factory(self.dim, key, metric)
        faiss.downcast_index(codes.index if self.opq else codes).do_polysemous_training = False  # 15x slower, unused
        if not self.opq:
            order = balanced_order(np.mean(sample * sample, axis=0), self.code_bytes)
            codes = faiss.IndexPreTransform(faiss.RemapDimensionsTransform(self.dim, self.dim, faiss.swig_ptr(order)),
                                            codes)
        codes.train(sample)
        self.codes_ = codes
        self.indexed_ = 0
        return self._add(prefix, progress)

    def extend(self, store: BlockStore, *, progress: bool = False) -> "PQIndex":
        """Encode the rows stored since the last build or extend."""
        return self._add(self._prefix(store, self.indexed_), progress) if self.indexed_ < store.count else self

    def _add(self, prefix: np.ndarray, progress: bool) -> "PQIndex":
        with tqdm(total=len(prefix), desc=f"pq{self.code_bytes}@d{self.dim}", disable=not progress) as bar:
            for start in range(0, len(prefix), _ADD_CHUNK):
                self.codes_.add(prefix[start : start + _ADD_CHUNK])
                bar.update(min(_ADD_CHUNK, len(prefix) - start))
        self.indexed_ = self.codes_.ntotal
        return self

    def candidates(self, store: BlockStore, query: np.ndarray, stage, keep: int, cost):
        """The `keep` rows whose codes score best against the query's prefix."""
        if stage.dim != self.dim:
            raise InvalidInputError(f"these PQ codes are built on d{self.dim}; the plan asks for d{stage.dim}")
        scores, found = self.codes_.search(np.ascontiguousarray(query[None, : self.dim]), min(keep, self.indexed_))
        table = 256 * self.dim + (self.dim * self.dim if self.opq else 0)
        cost.multiply_adds += table + self.indexed_ * self.code_bytes
        cost.items_scanned += self.indexed_
        cost.bytes_read += 4 * table + self.indexed_ * self.code_bytes
        valid = found[0] >= 0
        return found[0][valid], self._scored(query[None, : self.dim], scores)[0][valid], None

    def candidates_batch(self, store: BlockStore, queries: np.ndarray, stage, keep: int, cost):
        """`candidates` for many queries in one faiss call: (queries × keep) rows (-1 past the codes)
        and scores."""
        if stage.dim != self.dim:
            raise InvalidInputError(f"these PQ codes are built on d{self.dim}; the plan asks for d{stage.dim}")
        scores, rows = self.codes_.search(np.ascontiguousarray(queries[:, : self.dim]), min(keep, self.indexed_))
        table = 256 * self.dim + (self.dim * self.dim if self.opq else 0)
        cost.multiply_adds += len(queries) * (table + self.indexed_ * self.code_bytes)
        cost.items_scanned += len(queries) * self.indexed_
        cost.bytes_read += len(queries) * (4 * table + self.indexed_ * self.code_bytes)
        return rows, self._scored(queries[:, : self.dim], scores), None

    def _scored(self, heads: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """faiss's scores of each query (a row; `heads`: the queries' prefixes) as the funnel ranks them:
        for l2, squared distances d as ‖q‖² − d."""
        return np.einsum("ij,ij->i", heads, heads)[:, None] - scores if self.metric == "l2" else scores

    def candidate_width(self, stage, keep: int) -> int:
        """The most candidates `candidates_batch` gives a query."""
        return keep

    def save(self, path) -> None:
        faiss.write_index(self.codes_, str(path))

    def load(self, path, store: BlockStore) -> "PQIndex":
        self.codes_ = read_faiss_index(path, "PQ index", self.dim, store.count)
        self.indexed_ = self.codes_.ntotal
        return self

    def resident_bytes(self) -> int:
        """RAM the codes hold: M bytes per item, the codebooks, and the OPQ rotation."""
        return self.indexed_ * self.code_bytes + 256 * self.dim * 4 + (self.dim * self.dim * 4 if self.opq else 0)


def balanced_order(energy: np.ndarray, parts: int) -> np.ndarray:
    """A permutation of dims, read as `parts` equal consecutive groups, giving every group
    about the same total log-energy: each dim, strongest first, joins the poorest open group."""
    size = len(energy) // parts
    logs = np.log(np.maximum(energy, 1e-30) / max(float(energy.min()), 1e-30))  # >= 0, so joining adds wealth
    groups: list[list[int]] = [[] for _ in range(parts)]
    wealth = np.zeros(parts)
    for dim in np.argsort(-energy, kind="stable"):
        open_groups = [g for g in range(parts) if len(groups[g]) < size]
        poorest = min(open_groups, key=wealth.__getitem__)
        groups[poorest].append(int(dim))
        wealth[poorest] += logs[dim]
    return np.array([d for group in groups for d in group], dtype=np.int32)


def best_prefix(store: BlockStore, code_bytes: int, *, dims=None, opq: bool = False, sample: int = 2000,
                seed: int = 0) -> tuple[int, dict[int, float]]:
    """The prefix dim whose PQ codes of `code_bytes` bytes best rank a sample of stored rows
    (each used as a query, recall@10 against exact search on all dims), and the recall of each."""
    dims = [d for d in (dims or store.nesting) if d % code_bytes == 0 and d >= code_bytes]
    if not dims:
        raise InvalidInputError(f"no candidate dim is a multiple of {code_bytes} bytes")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(store.count, min(sample, store.count), replace=False))
    queries = store.rows(rows)
    truth = run_plan(store, queries, Plan.exact(store.dim), 11).ids[:, 1:]  # skip the row itself
    recalls = {}
    for dim in dims:
        index = PQIndex(dim=dim, code_bytes=code_bytes, opq=opq, seed=seed).build(store)
        _, found = index.codes_.search(np.ascontiguousarray(queries[:, :dim]), 11)
        recalls[dim] = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
    return max(recalls, key=recalls.get), recalls
