"""Our one-query scan of 4-bit fast-scan IVF lists (_fastscan.c): every SIMD kernel sums the same, the
ranking follows faiss's own scan of the same lists, and one query at a time equals exact search at
exhaustive settings."""

import faiss
import numpy as np
import pytest
from conftest import NESTING, assert_same_ranking

from matsearch import BlockStore, Plan, _fastscan, _kernels, run_plan
from matsearch.index import IVFIndex
from matsearch.index.ivf_lists import CodedLists


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


def _scan(index, query, lists, keep, kernel=None, stop=None):
    coded = index.lists_
    rows, scores = np.empty(keep, np.int64), np.empty(keep, np.float32)
    args = (query, coded._centroids, coded.means_, lists, coded._codes_at, coded._rows_at, coded._sizes, keep,
            rows, scores) + (() if kernel is None and stop is None else (kernel, stop))
    kept, scanned, _ = _fastscan.scan(*args)
    return rows[:kept], scores[:kept], scanned


def test_every_kernel_sums_the_same(coded):
    store, index, queries = coded
    for query in queries[:20]:
        lists = np.empty(8, np.int64)
        _kernels.probe(index.centroids_[32], query, 8, lists)
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
        _kernels.probe(index.centroids_[32], query, 8, lists)
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
    with pytest.raises(ValueError, match="a stopping rule opens at least one list"):
        _scan(index, queries[0], lists[:1], 10, stop=(0, 0.3, 0.25, 0.03))
    with pytest.raises(TypeError, match="stop must be None or a tuple"):
        _scan(index, queries[0], lists[:1], 10, stop=0.3)
    with pytest.raises(TypeError, match=r"stop must be None or a tuple \(least, margin, depth, spent\), got \(1, 0"):
        _scan(index, queries[0], lists[:1], 10, stop=(1, 0.3))


def test_a_stopping_margin_opens_lists_nearest_first_until_the_shortlist_clears_the_next(coded):
    store, index, queries = coded
    scan, exact = index.scan_dim, run_plan(store, queries[:40], Plan.exact(384), 10)
    fixed = run_plan(store, queries[:40], Plan.parse(f"p16@d{scan}:60>d384"), 10, index=index)
    never = run_plan(store, queries[:40], Plan.parse(f"p2-16^1.99@d{scan}:60>d384"), 10, index=index)
    np.testing.assert_array_equal(never.ids, fixed.ids)  # a margin no query clears: every probed list opened
    opened, recalls = [], []
    for margin in (-0.5, 0.1, 0.2, 0.3, 0.5):
        plan = Plan.parse(f"p2-16^{margin}@d{scan}:60>d384")
        one = [run_plan(store, queries[i : i + 1], plan, 10, index=index) for i in range(40)]
        lists = np.array([r.cost.lists_probed for r in one])
        assert lists.min() >= 2 and lists.max() <= 16
        batch = run_plan(store, queries[:40], plan, 10, index=index)
        np.testing.assert_array_equal(batch.ids, np.vstack([r.ids for r in one]))
        assert batch.cost.lists_probed == lists.sum()
        opened.append(lists.mean())
        recalls.append(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(batch.ids, exact.ids)]))
    assert opened[0] == 2 and opened == sorted(opened) and opened[-1] > opened[1]  # a wider margin opens more lists
    assert recalls == sorted(recalls) and recalls[-1] > recalls[0]


@pytest.mark.parametrize("plan", ["p8@d{scan}:100>d384", "p8@d{scan}:100>d256:30>d384", "p2-16~0.3@d{scan}:60>d384",
                                  "p2-16^0.3@d{scan}:60>d384", "p2-16^0.2@d{scan}:100>d256:30>d384"])
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


def test_ties_with_the_kept_results_go_to_the_lower_row(coded):
    """Two copies of one list, the second holding lower rows: a scan keeping a few must keep what a scan keeping
    everything ranks first (the 16-bit filter never drops an item that ties the bar and wins on its row)."""
    store, index, queries = coded
    lists = index.lists_
    big = int(np.argmax(lists._sizes))
    n = int(lists._sizes[big])
    later, lower = np.arange(10_000, 10_000 + n, dtype=np.int64), np.arange(n, dtype=np.int64)
    twice = (np.ascontiguousarray(lists.means_[[big, big]]), np.array([lists._codes_at[big]] * 2, np.int64),
             np.array([later.ctypes.data, lower.ctypes.data], np.int64), np.array([n, n], np.int64))
    for query in queries[:20]:
        scan = lambda keep: _fastscan.scan(query, lists._centroids, twice[0], np.array([0, 1], np.int64), twice[1],  # noqa: E731
                                           twice[2], twice[3], keep, *(out := (np.empty(keep, np.int64),
                                                                               np.empty(keep, np.float32)))) and out
        every = scan(2 * n)[0]
        for keep in (1, 2, 5, 10):
            np.testing.assert_array_equal(scan(keep)[0], every[:keep])


def test_the_general_path_serves_what_the_compiled_funnel_cannot(coded, monkeypatch):
    """A plan ending on the codes (the general path scales their scores), and a probe whose lists hold fewer
    than the shortlist (its cost counted all the same)."""
    store, index, queries = coded
    query = queries[:1] * 3.0  # a query norm other than 1
    fused = [run_plan(store, query, Plan.parse(text), 10, index=index)
             for text in (f"p8@d{index.scan_dim}", f"p1@d{index.scan_dim}:{store.count // 2}>d384")]
    monkeypatch.setattr(index, "search_one", lambda *args: None)
    for one, text in zip(fused, (f"p8@d{index.scan_dim}", f"p1@d{index.scan_dim}:{store.count // 2}>d384")):
        general = run_plan(store, query, Plan.parse(text), 10, index=index)
        np.testing.assert_allclose(one.scores, general.scores, rtol=1e-6)
        for name in ("multiply_adds", "bytes_read", "candidates", "lists_probed", "items_scanned"):
            assert getattr(one.cost, name) == getattr(general.cost, name), (text, name)


def test_a_remapped_store_gets_a_fresh_compiled_funnel(elastic_scifact, tmp_path):
    """The same row count after a failed add is cut back (the store's maps are new): no stale addresses."""
    store, queries = elastic_scifact
    copy = BlockStore.create(tmp_path / "vectors", NESTING)
    copy.append(store.rows(np.arange(3000)))
    index = IVFIndex(n_lists=16, centroid_dim=32, scan_dim=64, codec="pq32x4fs").build(copy)
    plan = Plan.parse("p8@d64:200>d256:50>d384")
    before = run_plan(copy, queries[:1], plan, 10, index=index)
    copy.append(store.rows(np.arange(5)))
    copy.truncate(3000)
    copy.rewrite_norms()
    after = run_plan(copy, queries[:1], plan, 10, index=index)
    np.testing.assert_array_equal(after.ids, before.ids)


def test_lists_grown_from_a_whole_number_of_blocks_hold_every_code(elastic_scifact):
    """faiss's block lists copy past a list that holds a multiple of block-size items when given more; ours pack
    the new codes in place, whole blocks or one by one, and every code reads back as encoded."""
    store, queries = elastic_scifact
    prefix = np.ascontiguousarray(store.rows(np.arange(300))[:, :96])
    lists = CodedLists(1, 96, "pq3x4fs")
    lists.train(prefix, np.zeros(300, np.int64))
    for lo, hi in ((0, 64), (64, 65), (65, 96), (96, 200), (200, 300)):  # 64 items: the block size in bytes
        lists.add(prefix[lo:hi], np.arange(lo, hi), np.zeros(hi - lo, np.int64))
    expected, assigned = np.empty((300, lists.codes.code_size), np.uint8), np.zeros(300, np.int64)
    lists.codes.encode_vectors(300, faiss.swig_ptr(prefix), faiss.swig_ptr(assigned), faiss.swig_ptr(expected), False)
    held = faiss.downcast_InvertedLists(lists.codes.invlists)
    packer = lists.codes.get_CodePacker()
    blocks = faiss.rev_swig_ptr(held.get_codes(0), -(-300 // 32) * packer.block_size).reshape(-1, packer.block_size)
    np.testing.assert_array_equal(faiss.rev_swig_ptr(held.get_ids(0), 300), np.arange(300))
    for item in range(300):
        np.testing.assert_array_equal(packer.unpack_1(blocks, item), expected[item])
