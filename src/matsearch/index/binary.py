"""The compact tier: a few bytes of binary code per item in RAM, the full vectors left on disk.

Each stored row gets a code of `bits` bits — sign bits of its `bits`-prefix
(`sign`), of an ITQ rotation of that prefix (`itq`), or of a learned projection of
its 2·bits-prefix (`learned`, see `train.codes`) — packed into uint64 words and
held row by row. A query is coded the same way; the codes nearest it by
Hamming distance are the shortlist the funnel re-ranks with float prefixes read
from the memory-mapped store (plans ``h@b<bits>:<keep>>d<dim>…``). Only the codes,
the code's mean and projection live in RAM.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..errors import CollectionError, InvalidInputError
from ..matryoshka import normalize
from ..quantize.binary import fit_itq, nearest, pack_signs, words_for
from ..store import BlockStore
from .ivf import prefix_of

METHODS = ("learned", "itq", "sign")
_TRAIN_SAMPLE = 50_000
_ENCODE_CHUNK = 100_000


class BinaryIndex:
    """Binary codes of `bits` bits for every row of a BlockStore, by `method`."""

    kind = "h"

    def __init__(self, *, bits: int, method: str = "learned", metric: str = "cosine", seed: int = 0):
        words_for(bits)  # checks bits
        if method not in METHODS:
            raise InvalidInputError(f"binary code method {method!r} is not one of {METHODS}")
        self.bits, self.method, self.metric, self.seed = int(bits), method, metric, seed

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
        self.indexed_ = store.count
        return self

    @property
    def codes(self) -> np.ndarray:
        """(indexed rows, words) uint64 codes."""
        return self._codes[: self.indexed_]

    def candidates(self, store: BlockStore, query: np.ndarray, stage, keep: int, cost):
        """The `keep` rows whose codes are nearest the query's by Hamming distance (ties: lower row),
        scored by minus that distance."""
        if stage.dim != self.bits:
            raise InvalidInputError(f"these binary codes have {self.bits} bits; the plan asks for b{stage.dim}")
        if stage.effort is not None:
            raise InvalidInputError(f"these binary codes are scanned whole, they have no lists to probe ({stage})")
        unit = normalize(query[None]) if self.metric == "cosine" else query[None]
        rows, distances = nearest(self.codes, self.encode(unit)[0], min(keep, self.indexed_))
        cost.items_scanned += self.indexed_
        cost.bytes_read += self.codes.nbytes
        cost.multiply_adds += 0 if self.projection_ is None else self.projection_.size
        return rows, -distances.astype(np.float32), None

    def save(self, path) -> None:
        arrays = {"mean": self.mean_, "codes": self.codes}
        if self.projection_ is not None:
            arrays["projection"] = self.projection_
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    def load(self, path, store: BlockStore) -> "BinaryIndex":
        try:
            with np.load(path, allow_pickle=False) as data:
                self.mean_, codes = data["mean"], data["codes"]
                self.projection_ = data["projection"] if "projection" in data.files else None
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
        return self._codes.nbytes + self.mean_.nbytes + (0 if self.projection_ is None else self.projection_.nbytes)


def _capacity(current: int, needed: int) -> int:
    """Room for `needed` codes: exact on a build, growing by half on appends so adds stay amortised O(1)."""
    return needed if current == 0 else max(needed, current + current // 2)
