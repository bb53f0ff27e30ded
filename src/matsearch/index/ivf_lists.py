"""What an IVF index keeps in its lists: float32 prefix blocks, or faiss codes.

`FlatLists` copies the stored prefix blocks up to the scan dim, rows grouped list
by list, so a query scans a probed list at any nesting dim it chooses and hands
the funnel exact partial products. `CodedLists` keeps, per list, float16 or
int8 codes (faiss scalar quantiser) or PQ codes of the residual to the list's
centroid, scored with an asymmetric distance table: 8-bit codes (``pq<bytes>``,
faiss IVF-PQ) or 4-bit ones packed 32 to a block for SIMD table lookups
(``pq<sub-spaces>x4fs``, faiss IVF-PQ fast scan, whose lists our own kernel,
_fastscan.c, scans in place for inner-product scores); they rank at
the scan dim only, and the funnel re-scores their candidates exactly.
Both take the assignment of rows to lists from the IVF index that owns them.
"""

from __future__ import annotations

import re

import faiss
import numpy as np
from faiss import swig_ptr

from .. import _fastscan
from ..errors import CollectionError
from ..store import BlockStore, _dots_at

CODECS = ("f32", "f16", "int8")  # and "pq<bytes>", "pq<sub-spaces>x4fs"
_PQ_CODEC = re.compile(r"pq(?P<m>[1-9][0-9]*)(?P<fs>x4fs)?")
SCALAR_QUANTIZERS = {"f16": faiss.ScalarQuantizer.QT_fp16, "int8": faiss.ScalarQuantizer.QT_8bit}  # codec: faiss type
_TRAIN_SAMPLE = 50_000
_ID_BYTES = 8
_BLOCK = 32  # fast-scan codes per block
# faiss's fast-scan kernel, for the lists it scans (l2): int16 lookups, results in a reservoir, queries one by one (implem 11).
# On pkgsum (128 lists probed, 100 kept) it scanned in 86 µs a query against 107 µs for the default (implem 0,
# which picks the query-blocked 13), and batches of 1,000 ran as fast (proto_fastscan_knobs.py)
_FAST_SCAN_KERNEL = 11
_FAISS_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


def pq_spec(codec: str) -> tuple[int, int] | None:
    """(sub-spaces, bits per sub-space) of a PQ codec: ``pq<bytes>`` is 8 bits, ``pq<sub-spaces>x4fs`` 4
    (fast scan); None for any other codec."""
    match = _PQ_CODEC.fullmatch(codec)
    return None if match is None else (int(match["m"]), 4 if match["fs"] else 8)


def is_fast_scan(codec: str) -> bool:
    return (pq_spec(codec) or (0, 8))[1] == 4


def code_bytes(codec: str, scan_dim: int) -> int:
    """Bytes per item a list codec stores for a `scan_dim` prefix (before fast scan's padding of each
    list to a whole block of 32)."""
    spec = pq_spec(codec)
    return spec[0] * spec[1] // 8 if spec else {"f32": 4, "f16": 2, "int8": 1}[codec] * scan_dim


def list_means(prefix: np.ndarray, lists: np.ndarray, n_lists: int) -> np.ndarray:
    """The mean row of `prefix` in each list (zeros for an empty list), float32."""
    sums = np.zeros((n_lists, prefix.shape[1]), dtype=np.float64)
    np.add.at(sums, lists, prefix)
    return (sums / np.maximum(np.bincount(lists, minlength=n_lists), 1)[:, None]).astype(np.float32)


def merge_into_lists(offsets: np.ndarray, list_rows: np.ndarray, rows: np.ndarray, lists: np.ndarray):
    """Rows held list by list (`list_rows`, with `offsets`) joined by `rows` (all above the held ones)
    going to `lists`: (the order taking held-then-new positions to the merged ones, the merged
    rows, their offsets). Each list stays in row order."""
    held = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    order = np.argsort(np.concatenate([held, lists]), kind="stable")
    sizes = np.diff(offsets) + np.bincount(lists, minlength=len(offsets) - 1)
    return order, np.concatenate([list_rows, rows])[order], np.concatenate([[0], np.cumsum(sizes)])


class FlatLists:
    """Float32 copies of the stored prefix blocks up to `scan_dim`, in list order."""

    def __init__(self, n_lists: int, scan_dim: int):
        self.n_lists, self.scan_dim = n_lists, scan_dim
        self.list_rows = np.empty(0, dtype=np.int64)
        self.offsets = np.zeros(n_lists + 1, dtype=np.int64)

    @property
    def count(self) -> int:
        return len(self.list_rows)

    def add(self, store: BlockStore, rows: np.ndarray, lists: np.ndarray) -> None:
        """Merge `rows` (all above the held ones) into `lists`; each list stays in row order."""
        _, list_rows, offsets = merge_into_lists(self.offsets, self.list_rows, rows, lists)
        self._group(store, list_rows, offsets)

    def _group(self, store: BlockStore, list_rows: np.ndarray, offsets: np.ndarray) -> None:
        self.list_rows, self.offsets = list_rows, offsets
        self._sizes = np.ascontiguousarray(np.diff(offsets), dtype=np.int64)
        n_blocks = store.nesting.index(self.scan_dim) + 1
        self.bounds = store.bounds[:n_blocks]
        self.blocks = [np.ascontiguousarray(b[list_rows]) for b in store.blocks[:n_blocks]]
        self.inv_norms = [store.inv_prefix_norms(dim, list_rows) for dim in store.nesting[:n_blocks]]

    def scan(self, query: np.ndarray, lists: np.ndarray, dim: int):
        """(rows, partial dots over dims [0, dim), inverse prefix norms at dim) of the probed lists."""
        starts = self.offsets[lists]
        sizes = self.offsets[lists + 1] - starts
        runs = np.cumsum(sizes) - sizes  # where each list's run begins in the output
        positions = np.arange(int(sizes.sum())) + np.repeat(starts - runs, sizes)
        dots = None
        for (lo, hi), block in zip(self.bounds, self.blocks):  # read in place: each list is a contiguous run
            if lo >= dim:
                break
            value = _dots_at(block, query[lo:hi], positions)
            dots = value if dots is None else np.add(dots, value, out=dots)
        j = [hi for _, hi in self.bounds].index(dim)
        return self.list_rows[positions], dots, self.inv_norms[j][positions]

    def scan_batch(self, queries: np.ndarray, lists: np.ndarray, dim: int):
        """`scan` for many queries, each probing its row of `lists`: (queries × width) rows (-1 past
        a query's own), partial dots and inverse prefix norms, a query's lists in the order given.
        Each probed list is read once, by one GEMM with all the queries probing it."""
        sizes = np.diff(self.offsets)[lists]
        columns = np.cumsum(sizes, axis=1) - sizes  # where each (query, list) run begins in its row
        positions = self._positions(lists, sizes)
        dots = np.zeros(positions.shape, dtype=np.float32)
        parts = [(np.ascontiguousarray(queries[:, lo:hi]), block) for (lo, hi), block in zip(self.bounds, self.blocks)
                 if lo < dim]
        order = np.argsort(lists, axis=None, kind="stable")  # (query, probe) pairs grouped by list
        by_list = lists.ravel()[order]
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(by_list)) + 1, [len(order)]])
        for a, b in zip(cuts[:-1], cuts[1:]):
            lo, hi = self.offsets[by_list[a]], self.offsets[by_list[a] + 1]
            if lo == hi:
                continue
            probing = order[a:b] // lists.shape[1]
            value = None
            for query_part, block in parts:
                product = query_part[probing] @ block[lo:hi].T
                value = product if value is None else np.add(value, product, out=value)
            dots[probing[:, None], columns.ravel()[order[a:b]][:, None] + np.arange(hi - lo)] = value
        j = [hi for _, hi in self.bounds].index(dim)
        held = np.maximum(positions, 0)
        return np.where(positions >= 0, self.list_rows[held], -1), dots, self.inv_norms[j][held]

    def _positions(self, lists: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """(queries × width) positions in list order of each query's probed lists, run after run, -1 after."""
        totals = sizes.sum(axis=1)
        flat = sizes.ravel()
        count = int(flat.sum())
        positions = np.full((len(lists), int(totals.max(initial=0))), -1, dtype=np.int64)
        runs = np.cumsum(flat) - flat
        starts = np.cumsum(totals) - totals
        at = np.arange(count)
        positions[np.repeat(np.arange(len(lists)), totals), at - np.repeat(starts, totals)] = \
            at + np.repeat(self.offsets[lists.ravel()] - runs, flat)
        return positions

    def sizes(self) -> np.ndarray:
        return self._sizes.copy()

    def state(self) -> dict[str, np.ndarray]:
        return {"list_rows": self.list_rows, "offsets": self.offsets}

    def restore(self, state, store: BlockStore, path) -> None:
        list_rows, offsets = state["list_rows"], state["offsets"]
        if len(offsets) != self.n_lists + 1 or offsets[-1] != len(list_rows) or len(list_rows) > store.count:
            raise CollectionError(f"IVF index file {path} does not match its recipe or the stored vectors")
        self._group(store, list_rows, offsets)

    def resident_bytes(self) -> int:
        return sum(a.nbytes for a in [self.list_rows, self.offsets, *self.blocks, *self.inv_norms])


class CodedLists:
    """Compressed copies of the (normalised, for cosine) `scan_dim` prefix in a faiss IVF index
    whose lists we fill ourselves; its quantiser holds each list's mean at the scan dim,
    the reference PQ codes the residual to. `metric` is faiss's: "ip" (also cosine's) scores by
    inner product, "l2" by squared distance (ascending)."""

    def __init__(self, n_lists: int, scan_dim: int, codec: str, seed: int = 0, metric: str = "ip"):
        self.n_lists, self.scan_dim, self.codec, self.seed, self.metric = n_lists, scan_dim, codec, seed, metric
        self._fast = is_fast_scan(codec)
        self._probes: dict[int, faiss.IVFSearchParameters] = {}
        self._zeros = np.zeros(0, dtype=np.float32)

    @property
    def count(self) -> int:
        return self.codes.ntotal

    def train(self, prefix: np.ndarray, lists: np.ndarray) -> None:
        """Set the list means and train the codec on a sample of `prefix` (rows already assigned)."""
        means = list_means(prefix, lists, self.n_lists)
        quantizer = faiss.IndexFlatL2(self.scan_dim) if self.metric == "l2" else faiss.IndexFlatIP(self.scan_dim)
        quantizer.add(means)
        spec, metric = pq_spec(self.codec), _FAISS_METRICS[self.metric]
        if spec and spec[1] == 4:
            self.codes = faiss.IndexIVFPQFastScan(quantizer, self.scan_dim, self.n_lists, spec[0], 4, metric, _BLOCK)
            self.codes.by_residual = True
        elif spec:
            self.codes = faiss.IndexIVFPQ(quantizer, self.scan_dim, self.n_lists, spec[0], 8, metric)
            self.codes.do_polysemous_training = False
        else:
            self.codes = faiss.IndexIVFScalarQuantizer(quantizer, self.scan_dim, self.n_lists, SCALAR_QUANTIZERS[self.codec],
                                                       metric, False)
        sample = np.random.default_rng(self.seed).choice(len(prefix), min(len(prefix), _TRAIN_SAMPLE), replace=False)
        sample = np.sort(sample)
        train, assign = np.ascontiguousarray(prefix[sample]), np.ascontiguousarray(lists[sample], dtype=np.int64)
        if spec:
            train = np.ascontiguousarray(train - means[assign])
        self.codes.train_encoder(len(train), faiss.swig_ptr(train), faiss.swig_ptr(assign) if spec else None)
        self.codes.is_trained = True
        self._sizes = np.zeros(self.n_lists, dtype=np.int64)
        self._ready()

    def _ready(self) -> None:
        """Search settings of trained or restored codes: fast scan's kernel, and a view of the quantiser's
        list means for the coarse term fast scan takes from its caller."""
        if self._fast:
            self.codes.implem = _FAST_SCAN_KERNEL
        quantizer = faiss.downcast_index(self.codes.quantizer)
        self.means_ = faiss.rev_swig_ptr(quantizer.get_xb(), self.n_lists * self.scan_dim).reshape(self.n_lists, -1)
        if self._fast:
            pq = self.codes.pq
            self._centroids = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
            self._locate_lists()

    def _locate_lists(self) -> None:
        """Where each fast-scan list's codes and rows lie (they move when a list grows), for `_fastscan.scan`."""
        lists = faiss.downcast_InvertedLists(self.codes.invlists)
        self._codes_at, self._rows_at = (np.array([int(get(l)) if self._sizes[l] else 0 for l in range(self.n_lists)],
                                                  dtype=np.int64) for get in (lists.get_codes, lists.get_ids))

    def add(self, prefix: np.ndarray, rows: np.ndarray, lists: np.ndarray) -> None:
        prefix = np.ascontiguousarray(prefix, dtype=np.float32)
        rows, lists = np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(lists, dtype=np.int64)
        if self._fast:
            add_packed(self.codes, prefix, rows, lists)
        else:
            self.codes.add_core(len(prefix), faiss.swig_ptr(prefix), faiss.swig_ptr(rows), faiss.swig_ptr(lists))
        self._sizes += np.bincount(lists, minlength=self.n_lists)
        if self._fast:
            self._locate_lists()

    def scan(self, query: np.ndarray, lists: np.ndarray, keep: int, stop: tuple | None = None):
        """(rows, approximate scores) of the best `keep` items in the probed lists, the lists opened and the
        items scanned. `query`: float32, contiguous, at least scan_dim wide; `lists`: int64, contiguous;
        `stop`: the fast scan's stopping rule (`fused` lists only)."""
        if self.fused:  # our kernel, which counts what it opens
            rows, scores = np.empty(keep, dtype=np.int64), np.empty(keep, dtype=np.float32)
            kept, scanned, opened = _fastscan.scan(query, self._centroids, self.means_, lists, self._codes_at,
                                                   self._rows_at, self._sizes, keep, rows, scores, None, stop)
            return rows[:kept], scores[:kept], opened, scanned
        scanned = int(self._sizes[lists[lists >= 0]].sum())
        if self.metric == "l2":  # faiss's scan, given each list's distance to the query
            rows, scores = self._search(query[None, : self.scan_dim], lists[None], keep)
            valid = rows[0] >= 0
            return rows[0][valid], scores[0][valid], len(lists), scanned
        rows, scores = np.empty(keep, dtype=np.int64), np.empty(keep, dtype=np.float32)
        coarse = self._no_coarse(len(lists))
        self.codes.search_preassigned_c(1, swig_ptr(query), keep, swig_ptr(lists), swig_ptr(coarse), swig_ptr(scores),
                                        swig_ptr(rows), False, self._probe_params(len(lists)), None)
        if len(rows) and rows[-1] < 0:
            valid = rows >= 0
            rows, scores = rows[valid], scores[valid]
        return rows, scores, len(lists), scanned

    @property
    def fused(self) -> bool:
        """Whether `search` runs: fast-scan lists scored by inner product (our kernel)."""
        return self._fast and self.metric == "ip"

    def search(self, query: np.ndarray, lists: np.ndarray, keep: int, stages, rows: np.ndarray, scores: np.ndarray,
               stop: tuple | None = None):
        """`scan`, then the store re-rank `stages` ((layout, norms address, stride, keep, scale) each) in the
        same compiled call: (rows kept, items scanned, lists opened, seconds per stage), the rows and scores
        written best first."""
        return _fastscan.search(query, self._centroids, self.means_, lists, self._codes_at, self._rows_at,
                                self._sizes, keep, stages, rows, scores, stop)

    def _no_coarse(self, n: int) -> np.ndarray:
        """Coarse terms for scanners that compute their own (IVF-PQ and the scalar quantisers read, then ignore them)."""
        if len(self._zeros) < n:
            self._zeros = np.zeros(n, dtype=np.float32)
        return self._zeros

    def scan_batch(self, queries: np.ndarray, lists: np.ndarray, keep: int, stop: tuple | None = None):
        """`scan` for many queries: (queries × keep) rows (-1 past the items found) and approximate scores,
        and per query the items scanned and the lists opened. Fast-scan lists our kernel scores go through it
        query by query (with `stop`, its stopping rule), so a batch ranks exactly as its queries one at a time;
        the rest in one faiss call."""
        lists = np.ascontiguousarray(lists, dtype=np.int64)
        scanned = np.where(lists >= 0, self._sizes[lists], 0).sum(axis=1)  # -1: no list (adaptive)
        opened = np.count_nonzero(lists >= 0, axis=1)
        if self.fused:
            queries = np.ascontiguousarray(queries, dtype=np.float32)
            rows = np.full((len(queries), keep), -1, dtype=np.int64)
            scores = np.full((len(queries), keep), -np.inf, dtype=np.float32)
            for n, (query, probed, query_rows, query_scores) in enumerate(zip(queries, lists, rows, scores)):
                _, scanned[n], opened[n] = _fastscan.scan(query, self._centroids, self.means_, probed, self._codes_at,
                                                          self._rows_at, self._sizes, keep, query_rows, query_scores,
                                                          None, stop)
        else:
            rows, scores = self._search(np.ascontiguousarray(queries[:, : self.scan_dim]), lists, keep)
        return rows, scores, scanned, opened

    def _search(self, queries: np.ndarray, lists: np.ndarray, keep: int):
        """faiss's scan of the given lists: (rows, scores). Fast scan takes each list's coarse term
        (the query's product with the list mean) from us; the other scanners compute it."""
        n, nprobe = lists.shape
        if self.metric == "l2":  # ‖q − mean‖² of each list: fast scan and IVF-PQ's tables add it, SQ ignores it
            gap = queries[:, None, :] - self.means_[lists]
            coarse = np.einsum("qld,qld->ql", gap, gap)
        elif self._fast:
            coarse = np.einsum("qd,qld->ql", queries, self.means_[lists]) if n > 1 \
                else (self.means_[lists[0]] @ queries[0])[None, :]
        else:  # read but unused: IVF-PQ and the scalar quantisers take the product from the list mean themselves
            coarse = np.zeros(lists.shape, dtype=np.float32)
        queries, lists = np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(lists, dtype=np.int64)
        coarse = np.ascontiguousarray(coarse, dtype=np.float32)
        scores, rows = np.empty((n, keep), dtype=np.float32), np.empty((n, keep), dtype=np.int64)
        self.codes.search_preassigned_c(n, faiss.swig_ptr(queries), keep, faiss.swig_ptr(lists), faiss.swig_ptr(coarse),
                                        faiss.swig_ptr(scores), faiss.swig_ptr(rows), False,
                                        self._probe_params(nprobe), None)
        return rows, scores

    def _probe_params(self, nprobe: int) -> faiss.IVFSearchParameters:
        """The lists-probed setting passed with each search (made once per value), so threads sharing the
        index never race on its nprobe (faiss's Python search_preassigned takes it from the index)."""
        params = self._probes.get(nprobe)
        if params is None:
            params = self._probes[nprobe] = faiss.IVFSearchParameters()
            params.nprobe = nprobe
        return params

    def sizes(self) -> np.ndarray:
        return self._sizes.copy()

    def state(self) -> dict[str, np.ndarray]:
        return {"codes": faiss.serialize_index(self.codes)}

    def restore(self, state, store: BlockStore, path) -> None:
        try:
            codes = faiss.deserialize_index(state["codes"])
        except (RuntimeError, KeyError) as exc:
            raise CollectionError(f"IVF index file {path} is missing or corrupt: {exc}") from None
        spec = pq_spec(self.codec)
        expected = faiss.IndexIVFScalarQuantizer if spec is None else \
            faiss.IndexIVFPQFastScan if spec[1] == 4 else faiss.IndexIVFPQ
        if not isinstance(codes, expected) or codes.d != self.scan_dim or codes.nlist != self.n_lists \
                or codes.metric_type != _FAISS_METRICS[self.metric] \
                or codes.code_size != code_bytes(self.codec, self.scan_dim) or codes.ntotal > store.count:
            raise CollectionError(f"IVF index file {path} does not match its recipe or the stored vectors")
        self.codes = codes
        self._sizes = np.array([codes.invlists.list_size(l) for l in range(self.n_lists)], dtype=np.int64)
        self._ready()

    def resident_bytes(self) -> int:
        """Codes (fast scan's in whole blocks) and ids, the list means, and the codec's tables."""
        spec = pq_spec(self.codec)
        tables = (2 ** spec[1] if spec else 2) * self.scan_dim * 4
        codes = self.count * self.codes.code_size
        if spec and spec[1] == 4:
            codes = int(np.sum(-(-self._sizes // _BLOCK))) * _BLOCK * self.codes.code_size
        return codes + self.count * _ID_BYTES + self.n_lists * self.scan_dim * 4 + tables


def add_packed(index, prefix: np.ndarray, rows: np.ndarray, lists: np.ndarray) -> None:
    """Put `prefix`'s codes into a fast-scan IVF index's lists by our own assignment `lists`. (IndexIVF's
    add_core would store them unpacked, the fast-scan add assigns by its quantiser, and the block lists'
    add_entries copies past the list when it already holds a multiple of block-size items, in faiss 1.15.)
    Each list is grown, its new rows written, and the codes packed into place: whole blocks at once, the
    items of a partly filled block one by one."""
    flat = np.empty((len(prefix), index.code_size), dtype=np.uint8)
    index.encode_vectors(len(prefix), faiss.swig_ptr(prefix), faiss.swig_ptr(lists), faiss.swig_ptr(flat), False)
    packer, invlists = index.get_CodePacker(), faiss.downcast_InvertedLists(index.invlists)
    per_block, block_bytes = packer.nvec, packer.block_size
    order = np.argsort(lists, kind="stable")
    for run in np.split(order, np.flatnonzero(np.diff(lists[order])) + 1):
        if not len(run):
            continue
        list_no, held, codes = int(lists[run[0]]), invlists.list_size(int(lists[run[0]])), flat[run]
        invlists.resize(list_no, held + len(run))
        faiss.rev_swig_ptr(invlists.get_ids(list_no), held + len(run))[held:] = rows[run]
        blocks = faiss.rev_swig_ptr(invlists.get_codes(list_no), -(-(held + len(run)) // per_block) * block_bytes)
        at = 0
        while at < len(run):
            slot = held + at
            block = faiss.swig_ptr(blocks[slot // per_block * block_bytes :])
            if slot % per_block == 0 and len(run) - at >= per_block:
                packer.pack_all(faiss.swig_ptr(codes[at : at + per_block]), block)
                at += per_block
            else:
                packer.pack_1_c(faiss.swig_ptr(codes[at]), slot % per_block, block)
                at += 1
    index.ntotal += len(prefix)


def make_lists(n_lists: int, scan_dim: int, codec: str, seed: int = 0, metric: str = "ip"):
    """Float32 lists, or `codec` codes scored by faiss's `metric` ("ip" or "l2")."""
    return FlatLists(n_lists, scan_dim) if codec == "f32" else CodedLists(n_lists, scan_dim, codec, seed, metric)
