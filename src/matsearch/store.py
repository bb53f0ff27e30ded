"""The one stored copy of every vector: contiguous column blocks on disk, memory-mapped.

Block i holds dims [nesting[i-1], nesting[i]) of every item as its own row-major
file, so scanning a d-prefix reads only N·d contiguous values. Beside the blocks,
each item's prefix norm at every nesting boundary is kept (memory-mapped too) for
cosine and l2 scoring; it is derived data and is rebuilt from the blocks when missing.

Every file is mapped twice. Full scans (and reads of many rows) go through a plain
map, whose read-ahead makes a cold scan fast. A few scattered rows (a re-rank's
shortlist, documents fetched by id) go through a second map advised MADV_RANDOM, so a
row not in the page cache costs one page of I/O, not the kernel's read-around of up
to read_ahead_kb (8 MB on our VM) per fault. Measured on a cold 256 MB block (1M rows
of 64 dims, this VM): 1,000 random rows read 3.9 MiB in 80 ms through the random map
and the whole 244 MiB in 190 ms through the plain one; a full scan takes 0.78 s
through the plain map and 8.3 s through the random one. Both maps share the page
cache, so a warm store is read at the same speed either way.

A store meant to live on disk (`on_disk`) re-ranks scattered rows with direct I/O instead
(direct_rows.py): each row costs the sectors that hold it, not a page per block file, and
nothing of it stays in the page cache.
"""

from __future__ import annotations

import logging
import mmap
import os
import zlib
from pathlib import Path

import faiss
import numpy as np

from . import _kernels
from .direct_rows import DirectRows
from .errors import CollectionError

log = logging.getLogger(__name__)

_NORMS = "prefix-norms.f32"
_CHECKSUMS = "checksums.u64"
_CHECK_ROWS = 1 << 18  # rows verified at a time
_VERIFY_BYTES = 64 << 20  # norms verified when mapped, up to this many bytes at once (1M+ rows: `matsearch check`)
_F32 = 4
_FAISS_MIN_WIDTH = 64
_GATHER_BYTES = 32 << 20  # bound on rows copied out at once for a batch of queries
_DENSE = 512  # reading 1 row in _DENSE or more goes through the read-ahead map (see _maps_for)
_RANDOM = getattr(mmap, "MADV_RANDOM", None)  # absent on Windows: the second map is then a plain one


class BlockStore:
    """Column-block vector store; `count` rows are visible, appends grow it."""

    def __init__(self, folder: Path, nesting: list[int], count: int, *, writable: bool = False, on_disk: bool = False):
        self.folder = Path(folder)
        self.writable = writable
        self.nesting = list(nesting)
        self.bounds = list(zip([0] + self.nesting[:-1], self.nesting))
        self._starts = [lo for lo, _ in self.bounds]
        self.count = 0
        self._check_files(count)
        self._map(count)
        self.direct = DirectRows([_block_path(self.folder, lo, hi) for lo, hi in self.bounds],
                                 [hi - lo for lo, hi in self.bounds]) if on_disk else None

    @classmethod
    def create(cls, folder: Path, nesting: list[int]) -> "BlockStore":
        """Make an empty store in `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for lo, hi in zip([0] + nesting[:-1], nesting):
            _block_path(folder, lo, hi).touch()
        (folder / _NORMS).touch()
        return cls(folder, nesting, 0, writable=True)

    @property
    def dim(self) -> int:
        return self.nesting[-1]

    def _check_files(self, count: int) -> None:
        for lo, hi in self.bounds:
            path = _block_path(self.folder, lo, hi)
            if not path.exists():
                raise CollectionError(f"vector file {path} is missing")
            rows = path.stat().st_size // ((hi - lo) * _F32)
            if rows < count:
                raise CollectionError(f"vector file {path} holds {rows} rows, the collection has {count}")

    def _map(self, count: int) -> None:
        self.count = count
        paths = [_block_path(self.folder, lo, hi) for lo, hi in self.bounds]
        self.blocks = [_map_rows(path, count, hi - lo) for path, (lo, hi) in zip(paths, self.bounds)]
        self._random_blocks = [_map_rows(path, count, hi - lo, _RANDOM) for path, (lo, hi) in zip(paths, self.bounds)]
        self._layouts = [_layout(blocks, self.bounds) for blocks in (self.blocks, self._random_blocks)]
        norms_path = self.folder / _NORMS
        n_bounds = len(self.nesting)
        if norms_path.exists() and norms_path.stat().st_size >= count * n_bounds * _F32:
            self.norms = _map_rows(norms_path, count, n_bounds)
            self._random_norms = _map_rows(norms_path, count, n_bounds, _RANDOM)
        if not (norms_path.exists() and norms_path.stat().st_size >= count * n_bounds * _F32) \
                or not self._norms_sound(count):  # derived data: recomputed from the blocks
            self.norms = self._random_norms = _prefix_norms(self.blocks)
            if self.writable:
                self.norms.tofile(norms_path)
        self._norm_addresses = [norms.__array_interface__["data"][0] for norms in (self.norms, self._random_norms)]
        self._reads = {}  # (dense, lo, hi, normed): the kernel's view of these maps (see _read_plan)
        self.maps = getattr(self, "maps", 0) + 1  # counts remaps: what holds these maps' addresses checks it
        cached = getattr(self, "_inv_columns", {})  # kept for the rows they cover; grown by the new rows only
        self._inv_columns: dict[int, np.ndarray] = {
            j: np.concatenate([c[:count], _inverse(np.ascontiguousarray(self.norms[len(c):, j]))])
            for j, c in cached.items()}

    def grow(self, count: int) -> None:
        """See the first `count` rows, appended since (by another process, or unseen by this one)."""
        self._check_files(count)
        self._map(count)

    def append(self, vectors: np.ndarray, *, visible: bool = True) -> None:
        """Write rows after the current ones, flush them to disk, and make them visible (or, with
        `visible=False`, leave that to `grow`: the writer's slow part, beside the searches).

        Each append also records the CRC-32 of the bytes it wrote to every block file
        (`checksums.u32`), so `verify` can tell damaged rows from sound ones."""
        parts = [np.ascontiguousarray(vectors[:, lo:hi], dtype=np.float32) for lo, hi in self.bounds]
        files = [(_block_path(self.folder, lo, hi), part) for (lo, hi), part in zip(self.bounds, parts)]
        norms = np.ascontiguousarray(_prefix_norms(parts), dtype=np.float32)
        for path, part in files + [(self.folder / _NORMS, norms)]:
            _append_rows(path, part, self.count)
        crcs = [zlib.crc32(p.tobytes()) for p in parts] + [zlib.crc32(norms.tobytes())]
        record = np.array([self.count, len(vectors), *crcs], dtype=np.uint64)
        _append_rows(self.folder / _CHECKSUMS, record[None], self._checksum_records(), dtype=np.uint64)
        if visible:
            self._map(self.count + len(vectors))

    def truncate(self, count: int) -> None:
        """Drop rows past `count` (the tail of an append that was never committed)."""
        for lo, hi in self.bounds:
            _truncate_rows(_block_path(self.folder, lo, hi), count, hi - lo)
        _truncate_rows(self.folder / _NORMS, count, len(self.nesting))
        records = self._checksums()
        _truncate_rows(self.folder / _CHECKSUMS, int(np.count_nonzero(records[:, 0] < count)), 2 * records.shape[1])
        self._map(count)

    def _checksums(self) -> np.ndarray:
        """One row per append: first row, row count, the CRC-32 of each block file's bytes, then the norms'."""
        path, width = self.folder / _CHECKSUMS, 3 + len(self.bounds)
        if not path.exists():
            return np.zeros((0, width), dtype=np.uint64)
        data = np.fromfile(path, dtype=np.uint64)
        return data[: len(data) // width * width].reshape(-1, width)

    def _checksum_records(self) -> int:
        path = self.folder / _CHECKSUMS
        return path.stat().st_size // (8 * (3 + len(self.bounds))) if path.exists() else 0

    def _norms_sound(self, count: int) -> bool:
        """Whether the norm file's rows up to `count` match their checksums (only rows not yet
        verified by this object are read: O(rows added) on each refresh)."""
        verified = getattr(self, "_norms_verified", 0)
        if (count - verified) * len(self.nesting) * _F32 > _VERIFY_BYTES:  # a large store opened: left to `check`
            self._norms_verified = count
            return True
        for a, n, *crcs in self._checksums().tolist():
            if a >= verified and a + n <= count and \
                    zlib.crc32(np.ascontiguousarray(self.norms[a : a + n]).tobytes()) != crcs[-1]:
                log.warning("prefix norms in %s disagree with their checksums; recomputing them", self.folder)
                self._norms_verified = 0
                return False
        self._norms_verified = count
        return True

    def verify(self) -> list[tuple[Path, str]]:
        """(file, problem) for every block whose bytes disagree with the checksums written at commit,
        or that holds values that are not finite; rows written before checksums existed are only
        checked for finiteness."""
        problems = []
        records = self._checksums()
        for j, ((lo, hi), block) in enumerate(zip(self.bounds, self.blocks)):
            path = _block_path(self.folder, lo, hi)
            bad = [(a, a + n) for a, n, *crcs in records.tolist() if a + n <= self.count
                   and zlib.crc32(np.ascontiguousarray(block[a : a + n]).tobytes()) != crcs[j]]
            if bad:
                problems.append((path, f"{len(bad)} appended chunks fail their checksum (first: rows "
                                       f"{bad[0][0]}-{bad[0][1] - 1})"))
            elif not all(np.isfinite(block[a : a + _CHECK_ROWS]).all() for a in range(0, self.count, _CHECK_ROWS)):
                problems.append((path, "holds values that are not finite"))
        return problems

    def recompute_norms(self, lo: int, hi: int) -> np.ndarray:
        """The prefix norms of rows [lo, hi) computed afresh from the blocks."""
        return _prefix_norms([block[lo:hi] for block in self.blocks])

    def rewrite_norms(self) -> None:
        """Rewrite the prefix-norm file from the blocks (it is derived data)."""
        norms = np.vstack([self.recompute_norms(a, min(a + _CHECK_ROWS, self.count))
                           for a in range(0, self.count, _CHECK_ROWS)] or [np.zeros((0, len(self.nesting)))])
        _append_rows(self.folder / _NORMS, norms.astype(np.float32), 0)
        self._inv_columns = {}
        self._map(self.count)

    def _maps_for(self, rows: np.ndarray | None) -> tuple[list[np.ndarray], np.ndarray]:
        """The (blocks, norms) maps to read `rows` through: the random-access ones for a few scattered
        rows, the read-ahead ones for all rows or many.

        The random map pays a page fault (80-200 µs cold on this VM) per row; the plain one reads
        about the whole file, whatever the rows. Cold, sorted random rows of 1M-row blocks, plain
        vs random: 1 row in 256: 150 vs 790 ms (32 dims), 516 vs 416 ms (128 dims); 1 in 512: 139
        vs 195 ms, 567 vs 269 ms; 1 in 1,024: 135 vs 80 ms, 637 vs 170 ms. Both costs grow with N,
        so the crossover is a density (it moves with the disk's bandwidth × latency)."""
        if rows is None or np.size(rows) * _DENSE >= self.count:
            return self.blocks, self.norms
        return self._random_blocks, self._random_norms

    def dots(self, query: np.ndarray, lo: int, hi: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Partial inner products over dims [lo, hi) of `query` with all rows or with `rows`."""
        total = None
        in_place = rows is not None and query.ndim == 1  # whole blocks are read at `rows` without a copy
        if in_place:
            rows = np.ascontiguousarray(rows, dtype=np.int64)
        for (b_lo, b_hi), block in zip(self.bounds, self._maps_for(rows)[0]):
            a, b = max(lo, b_lo), min(hi, b_hi)
            if a >= b:
                continue
            if in_place and (a, b) == (b_lo, b_hi):
                value = _dots_at(block, query[a:b], rows)
            else:
                part = block if rows is None else block[rows]
                if (a, b) != (b_lo, b_hi):
                    part = part[:, a - b_lo : b - b_lo]
                value = _scan(part, query[a:b]) if query.ndim == 1 else query[:, a:b] @ part.T
            total = value if total is None else np.add(total, value, out=total)
        return total

    def whole_blocks(self, lo: int, hi: int) -> bool:
        """Whether dims [lo, hi) are whole blocks (what `rerank` reads)."""
        return lo in self._starts and hi in self.nesting and lo < hi

    def rerank(self, query: np.ndarray, rows: np.ndarray, lo: int, hi: int, partial: np.ndarray | None,
               keep: int, *, metric: str, scale: float | None = 1.0):
        """One query's funnel stage over `rows` in one compiled call: products p over the whole blocks
        [lo, hi) added to `partial` (the products over [0, lo), or None when lo is 0), scored by `metric`
        with each row's prefix norm at `hi` (ip: p; cosine: p / ‖x‖; l2: 2p − ‖x‖², the squared distance
        up to the query's ‖q‖²), times `scale`, or, if None, made final with the query's own prefix at `hi`
        (cosine: divided by ‖q‖; l2: minus ‖q‖², so −‖q − x‖², at most 0), the best `keep` kept, best first
        with ties to the lower row. Returns their (rows, scores, products over [0, hi))."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        keep = min(keep, len(rows))
        if self.direct is not None and len(rows) * _DENSE < self.count:
            return self._rerank_direct(query, rows, hi, keep, metric, scale)
        layout, norms, stride = self.read_plan(lo, hi, metric, len(rows))
        return _reranked(query, rows, layout, partial, norms, stride, scale, keep, metric)

    def _rerank_direct(self, query: np.ndarray, rows: np.ndarray, hi: int, keep: int, metric: str, scale):
        """`rerank` of scattered rows read from disk (direct_rows.py): every block up to `hi`, so the
        products start again at 0 (adding up block by block as the maps' path does, to the same values) and
        the prefix norm at `hi` comes from the values read, not from a page of the norm file."""
        rows = np.sort(rows)  # ties go to the lower row, as the kernel breaks them by position here
        parts = self.direct.gather(rows, self.nesting.index(hi) + 1)
        norms = np.ascontiguousarray(_prefix_norms(parts)[:, -1]) if metric != "ip" else None
        at, scores, dots = _reranked(query, np.arange(len(rows), dtype=np.int64), _layout(parts, self.bounds), None,
                                     0 if norms is None else norms.ctypes.data, 1, scale, keep, metric)
        return rows[at], scores, dots

    def read_plan(self, lo: int, hi: int, metric: str, rows: int):
        """What a compiled re-rank of `rows` rows over the whole blocks [lo, hi) reads: the blocks' layout rows
        (address, first dim, width), the address of the rows' prefix norms at `hi` (0 for ip) and their stride."""
        dense, normed = rows * _DENSE >= self.count, metric != "ip"
        layout, norms = self._reads.get((dense, lo, hi, normed)) or self._read_plan(dense, lo, hi, normed)
        return layout, norms, len(self.nesting)

    def _read_plan(self, dense: bool, lo: int, hi: int, normed: bool):
        """What `rerank` hands the kernel for blocks [lo, hi): their layout rows and the address of the
        prefix norms at `hi` (0 for ip), through the read-ahead maps or the random ones; made once."""
        j = 0 if dense else 1
        plan = (self._layouts[j][self._starts.index(lo) : self.nesting.index(hi) + 1],
                self._norm_addresses[j] + _F32 * self.nesting.index(hi) if normed else 0)
        self._reads[dense, lo, hi, normed] = plan
        return plan

    def dots_each(self, queries: np.ndarray, lo: int, hi: int, rows: np.ndarray) -> np.ndarray:
        """Partial inner products over dims [lo, hi) of each query with its own rows: (queries × width)
        `rows`, -1 where a query has fewer (its product there is -inf). Whole blocks are read in place
        by one faiss call for all the queries; part of a block is gathered a chunk of queries at a time."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        total = None
        for (b_lo, b_hi), block in zip(self.bounds, self._maps_for(rows)[0]):
            a, b = max(lo, b_lo), min(hi, b_hi)
            if a >= b:
                continue
            if (a, b) == (b_lo, b_hi):
                value = _dots_at(block, queries[:, a:b], rows)
            else:
                value = _gathered_dots(block, a - b_lo, b - b_lo, queries[:, a:b], rows)
            total = value if total is None else np.add(total, value, out=total)
        return total

    def norm_work(self, dim: int) -> int:
        """Values per row that `inv_prefix_norms(dim)` (or `prefix_squares`) must read: 0 at a nesting boundary."""
        return 0 if dim in self.nesting else dim - max([0] + [b for b in self.nesting if b < dim])

    def inv_prefix_norms(self, dim: int, rows: np.ndarray | None = None) -> np.ndarray:
        """1/‖x[:dim]‖ for all rows or for `rows` (0 where the prefix is all zeros).

        Kept for every nesting boundary; any other dim is computed from the blocks.
        """
        if dim in self.nesting:
            j = self.nesting.index(dim)
            if rows is None:
                return self._inv_column(j)
            return self._inv_columns[j][rows] if j in self._inv_columns else _inverse(self._maps_for(rows)[1][rows, j])
        return _inverse(np.sqrt(self._squares(dim, rows)))

    def prefix_squares(self, dim: int, rows: np.ndarray | None = None) -> np.ndarray:
        """‖x[:dim]‖² for all rows or for `rows` (l2 scores), from the kept norms at a nesting boundary."""
        if dim in self.nesting:
            norms = self._maps_for(rows)[1]
            column = norms[:, self.nesting.index(dim)] if rows is None else norms[rows, self.nesting.index(dim)]
            return np.square(column)
        return self._squares(dim, rows)

    def _squares(self, dim: int, rows: np.ndarray | None) -> np.ndarray:
        """‖x[:dim]‖² computed from the blocks, float32."""
        squares = np.zeros(self.count if rows is None else len(rows), dtype=np.float32)
        for (lo, hi), block in zip(self.bounds, self._maps_for(rows)[0]):
            if lo >= dim:
                break
            part = (block if rows is None else block[rows])[:, : min(hi, dim) - lo]
            squares += np.einsum("ij,ij->i", part, part)
        return squares

    def _inv_column(self, j: int) -> np.ndarray:
        """1/prefix norm of every row at boundary j, made contiguous in RAM the first time a full
        scan needs it (a tier that only re-ranks reads the memory-mapped norms at its rows)."""
        if j not in self._inv_columns:
            self._inv_columns[j] = _inverse(np.ascontiguousarray(self.norms[:, j]))
        return self._inv_columns[j]

    def rows(self, rows: np.ndarray, dim: int | None = None) -> np.ndarray:
        """Stored vectors of `rows`, whole or their first `dim` dims (only those blocks are read)."""
        dim = self.dim if dim is None else dim
        return np.hstack([block[rows, : min(hi, dim) - lo] if hi > dim else block[rows]
                          for (lo, hi), block in zip(self.bounds, self._maps_for(rows)[0]) if lo < dim])


def _reranked(query, rows, layout, partial, norms_at: int, stride: int, scale, keep: int, metric: str):
    """The compiled re-rank of `rows` over `layout`: (best `keep` rows, their scores, their products)."""
    out_rows, scores, dots = np.empty(keep, dtype=np.int64), np.empty(keep, np.float32), np.empty(keep, np.float32)
    _kernels.rerank(query, rows, layout, partial, norms_at, stride, -1.0 if scale is None else scale, keep,
                    out_rows, scores, dots, metric == "l2")
    return out_rows, scores, dots


def _layout(blocks: list[np.ndarray], bounds) -> np.ndarray:
    """(blocks × 3) int64: each block's address, first dim and width, for the compiled re-rank."""
    return np.array([(block.__array_interface__["data"][0], lo, hi - lo) for block, (lo, hi) in zip(blocks, bounds)],
                    dtype=np.int64).reshape(len(blocks), 3)


def _scan(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """rows @ query with the faster kernel for the width.

    Measured on 100k rows, one thread: BLAS gemv reads 32-wide rows at about
    34 GB/s against faiss's 19, but 128-wide rows at 14 GB/s against faiss's 32.
    """
    if rows.shape[1] < _FAISS_MIN_WIDTH or not rows.flags.c_contiguous or not len(rows):
        return rows @ query
    query = np.ascontiguousarray(query, dtype=np.float32)
    out = np.empty(len(rows), dtype=np.float32)
    faiss.fvec_inner_products_ny(
        faiss.swig_ptr(out), faiss.swig_ptr(query), faiss.swig_ptr(rows), rows.shape[1], len(rows)
    )
    return out


def _dots_at(block: np.ndarray, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """block[rows] @ query without copying the rows out (they are scattered: the cost is their fetch).

    Also for many queries at once: (queries × dims) `query` and (queries × width) `rows`, each query
    with its own rows (-1 gives -inf), in one call."""
    query = np.ascontiguousarray(query, dtype=np.float32)
    out = np.empty(rows.shape, dtype=np.float32)
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(query), faiss.swig_ptr(block),
                                     faiss.swig_ptr(rows), block.shape[1], 1 if query.ndim == 1 else len(query),
                                     rows.shape[-1])
    return out


def _gathered_dots(block: np.ndarray, a: int, b: int, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Products of each query with columns [a, b) of its own rows of `block` (-1: -inf), gathered
    for a chunk of queries at a time so the copy stays under _GATHER_BYTES."""
    out = np.empty(rows.shape, dtype=np.float32)
    step = max(1, _GATHER_BYTES // max(rows.shape[1] * (b - a) * _F32, 1))
    for lo in range(0, len(rows), step):
        part = rows[lo : lo + step]
        gathered = block[np.maximum(part, 0).ravel(), a:b].reshape(*part.shape, b - a)
        out[lo : lo + step] = np.einsum("qkw,qw->qk", gathered, queries[lo : lo + step])
    out[rows < 0] = -np.inf
    return out


def _prefix_norms(blocks: list[np.ndarray]) -> np.ndarray:
    """‖x[:boundary]‖ of every row at every nesting boundary, shape (rows, boundaries)."""
    squares = np.cumsum([np.einsum("ij,ij->i", b, b, dtype=np.float64) for b in blocks], axis=0)
    return np.sqrt(squares.T).astype(np.float32).reshape(-1, len(blocks))


def _block_path(folder: Path, lo: int, hi: int) -> Path:
    return folder / f"dims-{lo:05d}-{hi:05d}.f32"


def _inverse(norms: np.ndarray) -> np.ndarray:
    """1/norm as float32, 0 for a zero norm (no errstate: it costs microseconds per re-rank)."""
    out = np.zeros(norms.shape, dtype=np.float32)
    return np.divide(np.float32(1), norms, out=out, where=norms > 0)


def _map_rows(path: Path, count: int, width: int, advice: int | None = None) -> np.ndarray:
    """The first `count` rows of a float32 file, mapped read-only, with `advice` given to madvise."""
    if count == 0:
        return np.empty((0, width), dtype=np.float32)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), count * width * _F32, access=mmap.ACCESS_READ)
    if advice is not None:
        mapped.madvise(advice)
    return np.frombuffer(mapped, dtype=np.float32).reshape(count, width)


def _append_rows(path: Path, rows: np.ndarray, at_row: int, dtype=np.float32) -> None:
    if not path.exists():
        path.touch()
    with open(path, "r+b") as f:
        f.seek(at_row * rows.shape[1] * np.dtype(dtype).itemsize)
        f.write(np.ascontiguousarray(rows, dtype=dtype).tobytes())
        f.truncate()
        f.flush()
        os.fsync(f.fileno())


def _truncate_rows(path: Path, count: int, width: int) -> None:
    if path.exists() and path.stat().st_size > count * width * _F32:
        with open(path, "r+b") as f:
            f.truncate(count * width * _F32)
            os.fsync(f.fileno())
