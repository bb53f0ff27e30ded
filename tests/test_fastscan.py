"""Our one-query scan of 4-bit fast-scan IVF lists (_fastscan.c): every SIMD kernel sums the same, the
ranking follows faiss's own scan of the same lists, and one query at a time equals exact search at
exhaustive settings."""

import faiss
import numpy as np
import pytest
from conftest import NESTING, assert_same_ranking

from matsearch import BlockStore, Plan, _fastscan, _kernels, run_plan
from matsearch.index import IVFIndex


def kernels_here() -> list[str]:
    """The kernels this CPU runs: the portable one always, and the one chosen at load among them."""
    here = ["portable"]
    for name in ("avx2", "avx512"):
        try:
            _fastscan.scan(*_tiny_scan(), name)
            here.append(name)
        except ValueError as exc:
            assert "no kernel" in str(exc)
    assert _fastscan.KERNEL in here
    return here


def _tiny_scan():
    """Arguments of a scan of one empty list: runs on any kernel without reading codes."""
    zero = np.zeros(1, np.int64)
    return (np.ones(4, np.float32), np.zeros((2, 16, 2), np.float32), np.zeros((1, 4), np.float32), zero, zero, zero,
            zero, 1, np.empty(1, np.int64), np.empty(1, np.float32))


@pytest.fixture(scope="module", params=[6, 48, 64, 3])  # sub-spaces: AVX-512's half-register tail (6), odd M (3)
def coded(request, elastic_scifact):
    store, queries = elastic_scifact
    scan_dim = 96 if request.param != 64 else 128
    index = IVFIndex(n_lists=32, centroid_dim=32, scan_dim=scan_dim, codec=f"pq{request.param}x4fs").build(store)
    return store, index, queries


def _scan(index, query, lists, keep, kernel=None):
    coded = index.lists_
    rows, scores = np.empty(keep, np.int64), np.empty(keep, np.float32)
    args = (query, coded._centroids, coded.means_, lists, coded._codes_at, coded._rows_at, coded._sizes, keep,
            rows, scores) + (() if kernel is None else (kernel,))
    kept, scanned = _fastscan.scan(*args)
    return rows[:kept], scores[:kept], scanned


def test_every_kernel_sums_the_same(coded):
    store, index, queries = coded
    for query in queries[:20]:
        lists = np.empty(8, np.int64)
        _kernels.probe(index.centroids_[32], query, 8, lists, None)
        results = [_scan(index, query, lists, 50, kernel) for kernel in kernels_here()]
        for rows, scores, scanned in results[1:]:
            np.testing.assert_array_equal(rows, results[0][0])
            np.testing.assert_array_equal(scores, results[0][1])
            assert scanned == results[0][2] == index.list_sizes()[lists].sum()


def test_the_ranking_follows_faiss_scanning_the_same_lists(coded):
    store, index, queries = coded
    codes = index.lists_.codes
    overlap, gaps = [], []
    for query in queries[:50]:
        lists = np.empty(8, np.int64)
        _kernels.probe(index.centroids_[32], query, 8, lists, None)
        rows, scores, _ = _scan(index, query, lists, 50)
        coarse = np.ascontiguousarray(index.lists_.means_[lists] @ query[: index.scan_dim])
        theirs, their_scores = np.empty(50, np.int64), np.empty(50, np.float32)
        params = faiss.IVFSearchParameters()
        params.nprobe = 8
        codes.search_preassigned_c(1, faiss.swig_ptr(query), 50, faiss.swig_ptr(lists), faiss.swig_ptr(coarse),
                                   faiss.swig_ptr(their_scores), faiss.swig_ptr(theirs), False, params, None)
        assert np.all(np.diff(scores) <= 0)  # best first
        overlap.append(len(set(rows) & set(theirs)) / 50)
        gaps.append(abs(scores[0] - their_scores[0]))
    assert np.mean(overlap) >= 0.9 and max(gaps) < 0.05  # both quantise the tables to bytes, each its own way


def test_one_query_at_a_time_at_exhaustive_settings_is_exact_search(coded):
    store, index, queries = coded
    exact = run_plan(store, queries[:30], Plan.exact(384), 10)
    plan = Plan.parse(f"p32@d{index.scan_dim}:{store.count}>d384")
    for i in range(30):
        one = run_plan(store, queries[i : i + 1], plan, 10, index=index)
        assert one.cost.items_scanned == store.count
        assert_same_ranking(one.ids, one.scores, exact.ids[i : i + 1], exact.scores[i : i + 1])


def test_bad_arguments_are_refused_by_name(coded):
    store, index, queries = coded
    lists = np.array([0, 99], np.int64)
    with pytest.raises(ValueError, match="a list out of range or keep < 1"):
        _scan(index, queries[0], lists, 10)
    with pytest.raises(ValueError, match="a list out of range or keep < 1"):
        _scan(index, queries[0], lists[:1], 0)
    with pytest.raises(ValueError, match="no kernel 'neon' on this CPU"):
        _scan(index, queries[0], lists[:1], 10, "neon")
    with pytest.raises(TypeError, match="lists must hold 8-byte items"):
        _scan(index, queries[0], lists.astype(np.int32), 10)


@pytest.mark.parametrize("plan", ["p8@d{scan}:100>d384", "p8@d{scan}:100>d256:30>d384", "p2-16~0.3@d{scan}:60>d384"])
def test_the_compiled_funnel_gives_and_counts_what_the_general_path_does(coded, plan, monkeypatch):
    store, index, queries = coded
    plan = Plan.parse(plan.format(scan=index.scan_dim))
    called = []
    search_one = index.search_one
    monkeypatch.setattr(index, "search_one", lambda *args: called.append(1) or search_one(*args))
    fused = [run_plan(store, queries[i : i + 1], plan, 10, index=index) for i in range(20)]
    assert len(called) == 20
    monkeypatch.setattr(index, "search_one", lambda *args: None)
    for i, one in enumerate(fused):
        general = run_plan(store, queries[i : i + 1], plan, 10, index=index)
        np.testing.assert_array_equal(one.ids, general.ids)
        np.testing.assert_allclose(one.scores, general.scores, rtol=1e-6)
        for name in ("multiply_adds", "bytes_read", "candidates", "lists_probed", "items_scanned"):
            assert getattr(one.cost, name) == getattr(general.cost, name), name
        assert len(one.cost.stage_seconds) == len(plan.stages) and min(one.cost.stage_seconds) > 0


def test_deleted_rows_and_too_few_candidates_take_the_general_path(coded):
    store, index, queries = coded
    exact = run_plan(store, queries[:5], Plan.exact(384), 10)
    dead = exact.ids[:, 0]
    for i in range(5):
        found = run_plan(store, queries[i : i + 1], Plan.parse(f"p8@d{index.scan_dim}:100>d384"), 10, index=index,
                         dead_rows=dead)
        assert not np.isin(found.ids, dead).any()
        few = run_plan(store, queries[i : i + 1], Plan.parse(f"p1@d{index.scan_dim}:{store.count}>d384"),
                       store.count // 8, index=index)  # one list holds fewer: a full scan makes up the rest
        assert few.ids.shape == (1, store.count // 8)


def test_a_grown_store_gets_a_fresh_compiled_funnel(elastic_scifact, tmp_path, monkeypatch):
    store, queries = elastic_scifact
    grown = BlockStore.create(tmp_path / "vectors", NESTING)
    grown.append(store.rows(np.arange(3000)))
    index = IVFIndex(n_lists=16, centroid_dim=32, scan_dim=64, codec="pq32x4fs").build(grown)
    plan = Plan.parse("p16@d64:2000>d256:1000>d384")  # every list: all 2,000 best codes re-ranked
    run_plan(grown, queries[:1], plan, 10, index=index)  # its funnel made for 3,000 rows
    grown.append(store.rows(np.arange(3000, store.count)))
    index.extend(grown)
    fused = [run_plan(grown, queries[i : i + 1], plan, 10, index=index) for i in range(10)]
    monkeypatch.setattr(index, "search_one", lambda *args: None)
    for i, one in enumerate(fused):
        general = run_plan(grown, queries[i : i + 1], plan, 10, index=index)
        np.testing.assert_array_equal(one.ids, general.ids)
        assert one.cost.items_scanned == general.cost.items_scanned == store.count
