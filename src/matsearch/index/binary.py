"""The compact tier: a few bytes of binary code per item in RAM, the full vectors left on disk.

Each stored row gets a code of `bits` bits — sign bits of its `bits`-prefix
(`sign`), of an ITQ rotation of that prefix (`itq`), or of a learned projection of
its 2·bits-prefix (`learned`, see `train.codes`) — packed into uint64 words and
held row by row. A query is coded the same way; the codes nearest it by
Hamming distance are the shortlist the funnel re-ranks with float prefixes read
from the memory-mapped store (plans ``h@b<bits>:<keep>>d<dim>…``). Only the codes,
the code's mean and projection live in RAM.

With `lists` (binary IVF, recipe ``bin64+ivf4096@d64``) the rows are also grouped by
their nearest of `lists` spherical (for l2, Euclidean) k-means centroids on the `centroid_dim`-prefix;
a query (``h32@b64:…``) scans only the codes of the lists whose centroids are
nearest its prefix, at 4 more bytes per item (the lists' row numbers).
With `copy` (``bin64+int8@d32``) the index also holds an int8 or float16 copy of a
prefix (see `prefix_copy`), so a plan can cut the Hamming shortlist in RAM
(``h@b64:2000>d32/int8:200>d384``) before it reads the store.
"""

from __future__ import annotations

import faiss
import numpy as np
from tqdm.auto import tqdm

from ..errors import CollectionError, InvalidInputError
from ..matryoshka import normalize
from ..quantize.binary import fit_itq, hamming_topk, nearest, pack_signs, words_for
from ..store import BlockStore
from ..topk import top_k
from .ivf import nearest_list, prefix_of, probe_biases
from .ivf_lists import merge_into_lists
from .prefix_copy import PrefixCopy

METHODS = ("learned", "itq", "sign")
_TRAIN_SAMPLE = 50_000
_ENCODE_CHUNK = 100_000


class BinaryIndex:
    """Binary codes of `bits` bits for every row of a BlockStore, by `method`."""

    kind = "h"

    def __init__(self, *, bits: int, method: str = "learned", metric: str = "cosine", lists: int | None = None,
                 centroid_dim: int | None = None, copy: tuple[str, int] | None = None, seed: int = 0):
        words_for(bits)  # checks bits
        if method not in METHODS:
            raise InvalidInputError(f"binary code method {method!r} is not one of {METHODS}")
        if (lists is None) != (centroid_dim is None) or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (lists, centroid_dim) if v is not None):
            raise InvalidInputError(f"binary IVF needs positive integer lists and centroid_dim together, "
                                    f"got {lists!r} and {centroid_dim!r}")
        self.bits, self.method, self.metric, self.seed = int(bits), method, metric, seed
        self.lists, self.centroid_dim = lists, centroid_dim
        self.copy = copy
        self.copy_ = None if copy is None else PrefixCopy(*copy, metric=metric)

    def build(self, store: BlockStore, *, progress: bool = False) -> "BinaryIndex":
        """Fit the coding on a sample of the stored rows (not for `sign`) and code every row."""
        if self.bits > store.dim:
            raise InvalidInputError(f"{self.bits}-bit codes need at least {self.bits} dims, the vectors have {store.dim}")
        if self.method == "sign":
            self.mean_, self.projection_ = np.zeros(self.bits, dtype=np.float32), None
        else:
            rng = np.random.default_rng(self.seed)
            sample = store.rows(np.sort(rng.choice(store.count, min(store.count, _TRAIN_SAMPLE), replace=False)))
            if self.method == "itq":
                self.mean_, self.projection_ = fit_itq(sample, self.bits, seed=self.seed)
            else:
                from ..train.codes import fit_learned_codes  # torch loads only to train

                self.mean_, self.projection_ = fit_learned_codes(sample, self.bits, seed=self.seed, progress=progress)
        self._codes = np.zeros((0, words_for(self.bits)), dtype=np.uint64)
        self.indexed_ = 0
        if self.lists is not None:
            self.lists_ = CodeLists.train(store, self.lists, self.centroid_dim, self.metric, self.seed, progress)
        if self.copy is not None:
            self.copy_ = PrefixCopy(*self.copy, metric=self.metric).train(store, self.seed)
        return self.extend(store, progress=progress)

    @property
    def input_dim(self) -> int:
        """The prefix a code is computed from."""
        return len(self.mean_)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """(N, words) uint64 codes of (N, ≥ input_dim) vectors in the store's space."""
        centred = vectors[:, : self.input_dim] - self.mean_
        return pack_signs(centred if self.projection_ is None else centred @ self.projection_)

    def extend(self, store: BlockStore, *, progress: bool = False) -> "BinaryIndex":
        """Code the rows stored since the last build or extend."""
        if self.indexed_ >= store.count:
            return self
        grown = np.zeros((_capacity(len(self._codes), store.count), self._codes.shape[1]), dtype=np.uint64)
        grown[: self.indexed_] = self._codes[: self.indexed_]
        self._codes = grown
        with tqdm(total=store.count - self.indexed_, desc=f"bin{self.bits}/{self.method}", disable=not progress) as bar:
            for lo in range(self.indexed_, store.count, _ENCODE_CHUNK):
                hi = min(lo + _ENCODE_CHUNK, store.count)
                self._codes[lo:hi] = self.encode(prefix_of(store, self.input_dim, lo, hi))
                bar.update(hi - lo)
        if self.lists is not None:  # codes are held in list order, so a probed list is one contiguous run
            self._codes = self._codes[: store.count][self.lists_.add(store, self.indexed_)]
        if self.copy is not None:
            self.copy_.add(store, self.indexed_)
        self.indexed_ = store.count
        return self

    @property
    def codes(self) -> np.ndarray:
        """(indexed rows, words) uint64 codes, in row order (in list order with binary IVF: see `lists_.rows`)."""
        return self._codes[: self.indexed_]

    def candidates(self, store: BlockStore, query: np.ndarray, stage, keep: int, cost):
        """The `keep` rows whose codes are nearest the query's by Hamming distance, scored by minus
        that distance; ties go to the lower row (with binary IVF, to the earlier position in list order)."""
        if stage.dim != self.bits:
            raise InvalidInputError(f"these binary codes have {self.bits} bits; the plan asks for b{stage.dim}")
        if stage.effort is not None and self.lists is None:
            raise InvalidInputError(f"these binary codes are scanned whole, they have no lists to probe ({stage})")
        unit = normalize(query[None]) if self.metric == "cosine" else query[None]
        code = self.encode(unit)[0]
        cost.multiply_adds += 0 if self.projection_ is None else self.projection_.size
        if stage.effort is None or stage.effort >= self.lists:  # every code
            found, distances = nearest(self.codes, code, min(keep, self.indexed_))
            cost.items_scanned += self.indexed_
            cost.bytes_read += self.codes.nbytes + (0 if self.lists is None else 4 * len(found))
            rows = found if self.lists is None else self.lists_.rows[found].astype(np.int64)
            return rows, -distances.astype(np.float32), None
        runs = self.lists_.probe(unit[0], stage.effort, cost)
        codes = np.concatenate([self._codes[a:b] for a, b in runs])
        found, distances = nearest(codes, code, min(keep, len(codes)))
        cost.items_scanned += len(codes)
        cost.bytes_read += codes.nbytes + 4 * len(codes)  # the codes and the row numbers of the probed lists
        rows = np.concatenate([self.lists_.rows[a:b] for a, b in runs])[found].astype(np.int64)
        return rows, -distances.astype(np.float32), None

    def candidates_batch(self, store: BlockStore, queries: np.ndarray, stage, keep: int, cost):
        """`candidates` for many queries: coded together, their nearest codes found by one batched
        Hamming scan of every code, or (binary IVF) lists picked by one GEMM with the centroids;
        (queries × keep) rows (-1 past a query's own) and scores."""
        if stage.dim != self.bits:
            raise InvalidInputError(f"these binary codes have {self.bits} bits; the plan asks for b{stage.dim}")
        if stage.effort is not None and self.lists is None:
            raise InvalidInputError(f"these binary codes are scanned whole, they have no lists to probe ({stage})")
        units = normalize(queries) if self.metric == "cosine" else queries
        codes = self.encode(units)
        cost.multiply_adds += 0 if self.projection_ is None else len(queries) * self.projection_.size
        rows = np.full((len(queries), min(keep, self.indexed_)), -1, dtype=np.int64)
        distances = np.zeros(rows.shape, dtype=np.float32)
        if stage.effort is None or stage.effort >= self.lists:  # every code
            found, near = hamming_topk(self.codes, codes, rows.shape[1])
            cost.items_scanned += len(queries) * self.indexed_
            cost.bytes_read += len(queries) * self.codes.nbytes + (0 if self.lists is None else 4 * found.size)
            rows = found if self.lists is None else self.lists_.rows[found].astype(np.int64)
            return rows, -near.astype(np.float32), None
        for n, (code, runs) in enumerate(zip(codes, self.lists_.probe_batch(units, stage.effort, cost))):
            probed = np.concatenate([self._codes[a:b] for a, b in runs])
            found, near = nearest(probed, code, min(keep, len(probed)))
            cost.items_scanned += len(probed)
            cost.bytes_read += probed.nbytes + 4 * len(probed)
            rows[n, : len(found)] = np.concatenate([self.lists_.rows[a:b] for a, b in runs])[found]
            distances[n, : len(found)] = near
        return rows, -distances, None

    def candidate_width(self, stage, keep: int) -> int:
        """The most candidates `candidates_batch` gives a query."""
        return keep

    def rescore(self, query: np.ndarray, rows: np.ndarray, stage, cost) -> np.ndarray:
        """Approximate scores of `rows` from the prefix copy this index holds in RAM (a ``d<dim>/<codec>`` stage)."""
        self._check_copy(stage)
        return self.copy_.score(query, rows, cost)

    def rescore_batch(self, queries: np.ndarray, rows: np.ndarray, stage, cost) -> np.ndarray:
        """`rescore` for many queries, each with its own (queries × width) rows (-1: padding, scored -inf)."""
        self._check_copy(stage)
        return self.copy_.score_batch(queries, rows, cost)

    def _check_copy(self, stage) -> None:
        if self.copy != (stage.codec, stage.dim):
            held = "no prefix copy" if self.copy is None else f"a {self.copy[0]} copy of d{self.copy[1]}"
            raise InvalidInputError(f"plan stage {stage} needs a {stage.codec} copy of d{stage.dim} in RAM; "
                                    f"these binary codes hold {held}")

    def save(self, path) -> None:
        arrays = {"mean": self.mean_, "codes": self.codes}
        if self.projection_ is not None:
            arrays["projection"] = self.projection_
        if self.lists is not None:
            arrays.update(self.lists_.state())
        if self.copy is not None:
            arrays.update(self.copy_.state())
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    def load(self, path, store: BlockStore) -> "BinaryIndex":
        try:
            with np.load(path, allow_pickle=False) as data:
                self.mean_, codes = data["mean"], data["codes"]
                self.projection_ = data["projection"] if "projection" in data.files else None
                if self.lists is not None:
                    self.lists_ = CodeLists.restore(data, self.lists, self.centroid_dim, self.metric, len(codes))
                if self.copy is not None:
                    self.copy_.restore(data, len(codes))
        except (OSError, ValueError, KeyError) as exc:
            raise CollectionError(f"binary code file {path} is missing or corrupt: {exc}") from None
        width = self.bits if self.projection_ is None else self.projection_.shape[1]
        if (codes.dtype != np.uint64 or codes.ndim != 2 or codes.shape[1] != words_for(self.bits) or len(codes) > store.count
                or width != self.bits or (self.method != "sign") != (self.projection_ is not None)):
            raise CollectionError(f"binary code file {path} does not match its recipe or the stored vectors")
        self._codes, self.indexed_ = codes, len(codes)
        return self

    def resident_bytes(self) -> int:
        """RAM the codes hold (with any room kept for adds), the mean and the projection."""
        coding = self._codes.nbytes + self.mean_.nbytes + (0 if self.projection_ is None else self.projection_.nbytes)
        return (coding + (0 if self.lists is None else self.lists_.resident_bytes())
                + (0 if self.copy is None else self.copy_.resident_bytes()))


class CodeLists:
    """Rows grouped by nearest centroid on a prefix: uint32 row numbers in (list, row) order."""

    def __init__(self, centroids: np.ndarray, metric: str):
        self.centroids, self.metric = centroids, metric
        self._bias = probe_biases({0: centroids}, metric).get(0, 0.0)  # l2: nearest by distance
        self.rows = np.empty(0, dtype=np.uint32)
        self.offsets = np.zeros(len(centroids) + 1, dtype=np.int64)

    @classmethod
    def train(cls, store: BlockStore, lists: int, dim: int, metric: str, seed: int, progress: bool) -> "CodeLists":
        """Spherical (for cosine) k-means on a sample of the stored `dim`-prefixes: 256 per list at most."""
        if dim > store.dim or lists > store.count:
            raise InvalidInputError(f"binary IVF with {lists} lists on d{dim} needs at most {store.dim} dims and "
                                    f"{store.count} stored rows")
        rng = np.random.default_rng(seed)
        sample = store.rows(np.sort(rng.choice(store.count, min(store.count, 256 * lists), replace=False)), dim)
        sample = normalize(sample) if metric == "cosine" else np.ascontiguousarray(sample)
        kmeans = faiss.Kmeans(dim, lists, niter=20, seed=seed, spherical=metric == "cosine", verbose=progress)
        kmeans.train(sample)
        return cls(kmeans.centroids.astype(np.float32), metric)

    def add(self, store: BlockStore, start: int) -> np.ndarray:
        """Put rows [start, store.count) into their nearest lists, each list staying in row order; return
        the order that takes (held positions, then the new rows) to the new list order."""
        lists = np.concatenate([nearest_list(self.centroids, self._prefix(store, lo, lo + _ENCODE_CHUNK), self.metric)
                                for lo in range(start, store.count, _ENCODE_CHUNK)])
        rows = np.arange(start, store.count, dtype=np.uint32)
        order, self.rows, self.offsets = merge_into_lists(self.offsets, self.rows, rows, lists)
        return order

    def _prefix(self, store: BlockStore, lo: int, hi: int) -> np.ndarray:
        prefix = prefix_of(store, self.centroids.shape[1], lo, hi)
        return normalize(prefix) if self.metric == "cosine" else prefix

    def probe(self, query: np.ndarray, count: int, cost) -> list[tuple[int, int]]:
        """The runs of positions (start, end) of the `count` lists whose centroids are nearest the
        query's prefix, in list order."""
        dim = self.centroids.shape[1]
        prefix = query[:dim]
        if self.metric == "cosine":
            prefix = normalize(prefix[None])[0]
        chosen = np.sort(top_k(self.centroids @ prefix + self._bias, count, ordered=False))  # in list order
        cost.multiply_adds += self.centroids.size
        cost.bytes_read += self.centroids.nbytes
        cost.lists_probed += len(chosen)
        return list(zip(self.offsets[chosen].tolist(), self.offsets[chosen + 1].tolist()))

    def probe_batch(self, queries: np.ndarray, count: int, cost) -> list[list[tuple[int, int]]]:
        """`probe` for many queries: one GEMM with the centroids."""
        dim = self.centroids.shape[1]
        prefixes = normalize(queries[:, :dim]) if self.metric == "cosine" else queries[:, :dim]
        scores = prefixes @ self.centroids.T + self._bias
        chosen = np.sort(np.argpartition(-scores, count - 1, axis=1)[:, :count], axis=1)
        cost.multiply_adds += len(queries) * self.centroids.size
        cost.bytes_read += len(queries) * self.centroids.nbytes
        cost.lists_probed += chosen.size
        starts, ends = self.offsets[chosen].tolist(), self.offsets[chosen + 1].tolist()
        return [list(zip(a, b)) for a, b in zip(starts, ends)]

    def state(self) -> dict:
        return {"centroids": self.centroids, "list_rows": self.rows, "list_offsets": self.offsets}

    @classmethod
    def restore(cls, data, lists: int, dim: int, metric: str, count: int) -> "CodeLists":
        restored = cls(data["centroids"], metric)
        restored.rows, restored.offsets = data["list_rows"], data["list_offsets"]
        if restored.centroids.shape != (lists, dim) or len(restored.rows) != count or restored.offsets[-1] != count:
            raise ValueError("its lists do not match the recipe or the codes")
        return restored

    def resident_bytes(self) -> int:
        return self.centroids.nbytes + self.rows.nbytes + self.offsets.nbytes


def _capacity(current: int, needed: int) -> int:
    """Room for `needed` codes: exact on a build, growing by half on appends so adds stay amortised O(1)."""
    return needed if current == 0 else max(needed, current + current // 2)
