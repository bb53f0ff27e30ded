"""A compact copy of one prefix in RAM: int8 or float16 per dim, for re-ranking a shortlist
without touching the memory-mapped store.

Each row's `dim`-prefix (normalised for cosine, so a dot product is the prefix's
cosine up to the query's norm) is kept as faiss scalar-quantiser codes: int8 with a
per-dim range learned from a sample, or float16. A plan stage ``d<dim>/int8:<keep>``
after a binary-code stage decodes only its candidates' rows and ranks them by
their dot product p with the query's prefix (for l2, by 2p − ‖x‖², the funnel's l2 ranking score).
"""

from __future__ import annotations

import faiss
import numpy as np

from ..errors import InvalidInputError
from ..matryoshka import normalize
from ..store import BlockStore
from .ivf import prefix_of
from .ivf_lists import SCALAR_QUANTIZERS

_SAMPLE = 50_000
_CHUNK = 100_000
_DECODE_BYTES = 32 << 20  # bound on rows decoded at once for a batch of queries


class PrefixCopy:
    """`codec` codes of the `dim`-prefix of every stored row, in row order."""

    def __init__(self, codec: str, dim: int, metric: str = "cosine"):
        if codec not in SCALAR_QUANTIZERS:
            raise InvalidInputError(f"prefix copy codec {codec!r} is not one of {list(SCALAR_QUANTIZERS)}")
        self.codec, self.dim, self.metric = codec, dim, metric
        self.quantizer = faiss.ScalarQuantizer(dim, SCALAR_QUANTIZERS[codec])
        self.codes = np.zeros((0, self.quantizer.code_size), dtype=np.uint8)

    def train(self, store: BlockStore, seed: int = 0) -> "PrefixCopy":
        """Learn the per-dim ranges (int8) from a sample of the stored prefixes."""
        if self.dim > store.dim:
            raise InvalidInputError(f"a prefix copy at d{self.dim} exceeds the vectors' {store.dim} dims")
        rows = np.sort(np.random.default_rng(seed).choice(store.count, min(store.count, _SAMPLE), replace=False))
        self.quantizer.train(self._unit(store.rows(rows, self.dim)))
        return self

    def _unit(self, prefix: np.ndarray) -> np.ndarray:
        return normalize(prefix) if self.metric == "cosine" else np.ascontiguousarray(prefix, dtype=np.float32)

    def add(self, store: BlockStore, start: int) -> None:
        """Code rows [start, store.count)."""
        parts = [self.codes[:start]]
        for lo in range(start, store.count, _CHUNK):
            parts.append(self.quantizer.compute_codes(self._unit(prefix_of(store, self.dim, lo, lo + _CHUNK))))
        self.codes = np.concatenate(parts)

    def score(self, query: np.ndarray, rows: np.ndarray, cost) -> np.ndarray:
        """Dot products of the query's prefix with the decoded copies of `rows` (l2: 2p − ‖x‖²)."""
        decoded = self.quantizer.decode(self.codes[rows])
        cost.multiply_adds += len(rows) * self.dim
        cost.bytes_read += len(rows) * self.codes.shape[1]
        return self._scored(decoded @ np.ascontiguousarray(query[: self.dim], dtype=np.float32), decoded)

    def _scored(self, dots: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        """Products with decoded rows (the last axis) as the funnel ranks them: for l2, 2p − ‖x‖²."""
        return 2 * dots - np.einsum("...d,...d->...", decoded, decoded) if self.metric == "l2" else dots

    def score_batch(self, queries: np.ndarray, rows: np.ndarray, cost) -> np.ndarray:
        """`score` for many queries, each with its own (queries × width) rows (-1: padding, scored -inf);
        the decoded copies are made a chunk of queries at a time."""
        valid = rows >= 0
        count = int(np.count_nonzero(valid))
        cost.multiply_adds += count * self.dim
        cost.bytes_read += count * self.codes.shape[1]
        out = np.empty(rows.shape, dtype=np.float32)
        step = max(1, _DECODE_BYTES // max(rows.shape[1] * self.dim * 4, 1))
        for lo in range(0, len(rows), step):
            part = np.maximum(rows[lo : lo + step], 0)
            decoded = self.quantizer.decode(self.codes[part.ravel()]).reshape(*part.shape, self.dim)
            out[lo : lo + step] = self._scored(np.matmul(decoded, queries[lo : lo + step, : self.dim, None])[..., 0],
                                               decoded)
        out[~valid] = -np.inf
        return out

    def state(self) -> dict:
        """The codes and the quantiser's trained ranges (empty for float16)."""
        return {"copy_codes": self.codes, "copy_ranges": faiss.vector_to_array(self.quantizer.trained)}

    def restore(self, data, count: int) -> "PrefixCopy":
        self.codes = data["copy_codes"]
        if self.codes.shape != (count, self.quantizer.code_size):
            raise ValueError("its prefix copy does not match the recipe or the codes")
        faiss.copy_array_to_vector(np.ascontiguousarray(data["copy_ranges"], dtype=np.float32), self.quantizer.trained)
        return self

    def resident_bytes(self) -> int:
        return self.codes.nbytes + 4 * self.quantizer.trained.size()
