"""The store's scattered reads (through maps advised MADV_RANDOM) give what whole-block reads give."""

import mmap
from pathlib import Path

import numpy as np
import pytest

from matsearch import BlockStore

NESTING = [16, 32, 64]
ITEMS = 4096
SPARSE = np.array([4095, 5, 17, 2999, 3000, 17, 1234])  # few rows: the random-access maps (a repeat, row 5 zero)
DENSE = np.sort(np.random.default_rng(1).choice(ITEMS, 200, replace=False))  # many: the read-ahead maps


@pytest.fixture
def stored(tmp_path):
    """A store written by two appends and reopened read-only, and the vectors it holds."""
    vectors = np.random.default_rng(3).normal(size=(ITEMS, 64)).astype(np.float32)
    vectors[5] = 0  # its inverse norm is 0
    store = BlockStore.create(tmp_path / "vectors", NESTING)
    store.append(vectors[:3000])
    store.append(vectors[3000:])
    return BlockStore(tmp_path / "vectors", NESTING, ITEMS), vectors


@pytest.mark.parametrize("rows", [SPARSE, DENSE], ids=["sparse", "dense"])
def test_rows_at_any_prefix_are_the_stored_values(stored, rows):
    store, vectors = stored
    np.testing.assert_array_equal(store.rows(rows), vectors[rows])
    for dim in (16, 40, 64):
        np.testing.assert_array_equal(store.rows(rows, dim), vectors[rows, :dim])


@pytest.mark.parametrize("rows", [SPARSE, DENSE], ids=["sparse", "dense"])
@pytest.mark.parametrize("lo, hi", [(0, 16), (0, 64), (16, 64), (8, 40)])
def test_dots_at_rows_match_numpy_and_the_full_scan(stored, rows, lo, hi):
    store, vectors = stored
    queries = np.random.default_rng(4).normal(size=(3, 64)).astype(np.float32)
    for query in queries:
        at_rows = store.dots(query, lo, hi, rows)
        np.testing.assert_allclose(at_rows, vectors[rows, lo:hi] @ query[lo:hi], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(at_rows, store.dots(query, lo, hi)[rows], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(store.dots(queries, lo, hi, rows), queries[:, lo:hi] @ vectors[rows, lo:hi].T,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [SPARSE, DENSE], ids=["sparse", "dense"])
@pytest.mark.parametrize("dim", [16, 32, 64, 40])  # 40 lies between boundaries: computed from the blocks
def test_inverse_prefix_norms_at_rows(stored, rows, dim):
    store, vectors = stored
    norms = np.linalg.norm(vectors[rows, :dim].astype(np.float64), axis=1)
    expected = np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0)
    np.testing.assert_allclose(store.inv_prefix_norms(dim, rows), expected, rtol=1e-5)
    np.testing.assert_allclose(store.inv_prefix_norms(dim, rows), store.inv_prefix_norms(dim)[rows], rtol=1e-6)


def _vm_flags(address: int) -> list[str]:
    """The kernel's VmFlags of the mapping of this process that holds `address`."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists() or not hasattr(mmap, "MADV_RANDOM"),
                    reason="needs Linux's /proc/self/smaps and madvise")
def test_scattered_rows_are_read_through_maps_advised_random(stored):
    store, _ = stored
    blocks, norms = store._maps_for(SPARSE)
    assert all("rr" in _vm_flags(a.ctypes.data) for a in blocks + [norms])  # rr: MADV_RANDOM given
    blocks, norms = store._maps_for(DENSE)
    assert all("rr" not in _vm_flags(a.ctypes.data) for a in blocks + [norms])  # full scans keep read-ahead
    assert store._maps_for(None)[0] is store.blocks


def _reference_rerank(vectors, query, rows, hi, keep, metric, scale):
    """What `BlockStore.rerank` must give, in numpy: products on [0, hi), scores, the best `keep`
    (score descending, ties to the lower row); scale None: final scores (l2: −‖q − x‖²)."""
    dots = vectors[rows, :hi] @ query[:hi]
    norms = np.linalg.norm(vectors[rows, :hi], axis=1)
    if metric == "l2":
        scores = 2 * dots - norms**2
        scores = -np.sum((vectors[rows, :hi] - query[:hi]) ** 2, axis=1) if scale is None else scores * scale
    else:
        scores = (np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0) if metric == "cosine" else dots)
        scores = scores * (1 / np.linalg.norm(query[:hi]) if scale is None else scale)
    order = np.lexsort((rows, -scores))[:keep]
    return rows[order], scores[order], dots[order]


@pytest.mark.parametrize("rows", [SPARSE, DENSE], ids=["sparse", "dense"])
@pytest.mark.parametrize("lo, hi", [(0, 16), (0, 64), (16, 64), (32, 64)])
@pytest.mark.parametrize("metric, scale", [("cosine", 0.5), ("ip", 0.5), ("l2", 0.5), ("l2", None)],
                         ids=["cosine", "ip", "l2", "l2-final"])
def test_the_compiled_rerank_scores_and_keeps_what_numpy_does(stored, rows, lo, hi, metric, scale):
    store, vectors = stored
    query = np.random.default_rng(5).normal(size=64).astype(np.float32)
    partial = vectors[rows, :lo] @ query[:lo] if lo else None  # what an earlier stage hands on
    for keep in (1, 4, len(rows), len(rows) + 3):
        got = store.rerank(query, rows, lo, hi, partial, keep, metric=metric, scale=scale)
        want = _reference_rerank(vectors, query, rows, hi, keep, metric, scale)
        assert len(got[0]) == min(keep, len(rows))
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-5)
        ties = np.isclose(want[1][:, None], want[1][None, :], rtol=1e-5, atol=1e-6).sum(axis=1) > 1
        np.testing.assert_array_equal(got[0][~ties], want[0][~ties])  # tied scores may swap between kernels


def test_the_compiled_rerank_breaks_exact_ties_by_row_and_takes_no_rows(stored):
    store, vectors = stored
    query = vectors[17].copy()
    rows = np.array([17, 3000, 17, 5, 2999])  # row 17 twice: equal scores, lower position order kept by row
    got_rows, scores, _ = store.rerank(query, rows, 0, 64, None, 3, metric="cosine", scale=1.0)
    assert got_rows[:2].tolist() == [17, 17] and scores[0] == scores[1]
    assert store.whole_blocks(0, 64) and store.whole_blocks(16, 32) and not store.whole_blocks(8, 32)
    by_own_norm = store.rerank(query, rows, 32, 64, vectors[rows, :32] @ query[:32], 5, metric="cosine", scale=None)
    by_given = store.rerank(query, rows, 32, 64, vectors[rows, :32] @ query[:32], 5, metric="cosine",
                            scale=1 / np.linalg.norm(query))  # None: the query's own norm over dims [0, 64)
    np.testing.assert_allclose(by_own_norm[1], by_given[1], rtol=1e-6)
    empty = store.rerank(query, np.zeros(0, dtype=np.int64), 0, 64, None, 10, metric="cosine")
    assert [len(part) for part in empty] == [0, 0, 0]
