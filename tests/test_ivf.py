import numpy as np
import pytest
from conftest import NESTING, assert_same_ranking

from matsearch import BlockStore, InvalidInputError, Plan, run_plan
from matsearch.index import IVFIndex


@pytest.fixture(scope="module")
def elastic(elastic_scifact):
    """An IVF index clustered on 32 dims over elastic SciFact."""
    store, queries = elastic_scifact
    return store, IVFIndex(n_lists=64, centroid_dim=32, scan_dim=128).build(store), queries


def recall(found, exact):
    return np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact)])


def test_every_row_is_in_exactly_one_list(elastic):
    store, index, _ = elastic
    assert sorted(index.lists_.list_rows) == list(range(store.count))
    assert index.list_sizes().sum() == store.count and len(index.list_sizes()) == 64


@pytest.mark.parametrize("dim", [32, 64, 128])
def test_exhaustive_probing_is_exact_search(elastic, dim):
    store, index, queries = elastic
    exact = run_plan(store, queries, Plan.parse(f"d{dim}:{store.count}>d384"), 10)
    ivf = run_plan(store, queries, Plan.parse(f"p64@d{dim}:{store.count}>d384"), 10, index=index)
    assert_same_ranking(ivf.ids, ivf.scores, exact.ids, exact.scores)


def test_probing_a_quarter_of_the_lists_keeps_recall(elastic):
    store, index, queries = elastic
    exact = run_plan(store, queries, Plan.exact(384), 10)
    ivf = run_plan(store, queries, Plan.parse("p16@d64:200>d384"), 10, index=index)
    assert recall(ivf.ids, exact.ids) >= 0.9
    assert ivf.cost.lists_probed == 16 * len(queries)
    assert ivf.cost.candidates[0] < store.count / 2
    full_scan = run_plan(store, queries, Plan.parse("d64:200>d384"), 10)
    assert ivf.cost.multiply_adds < full_scan.cost.multiply_adds / 2


def test_cost_counts_centroids_and_scanned_items(elastic):
    store, index, queries = elastic
    result = run_plan(store, queries[:1], Plan.parse("p8@d64:50>d384"), 10, metric="ip", index=index)
    scanned = result.cost.candidates[0]
    assert result.cost.multiply_adds == 64 * 32 + scanned * 64 + 50 * 320


def test_dead_rows_are_skipped_and_added_rows_join_their_lists(elastic, scifact, tmp_path):
    store, index, queries = elastic
    exact = run_plan(store, queries, Plan.exact(384), 5)
    dead = np.unique(exact.ids[:, 0])
    result = run_plan(store, queries, Plan.parse("p64@d64:400>d384"), 5, dead_rows=dead, index=index)
    assert not np.isin(result.ids, dead).any()

    fresh = BlockStore.create(tmp_path / "vectors", NESTING)
    fresh.append(store.rows(np.arange(4000)))
    partial = IVFIndex(n_lists=32, centroid_dim=32, scan_dim=64).build(fresh)
    fresh.append(store.rows(np.arange(4000, store.count)))
    found = run_plan(fresh, store.rows(np.array([4500])), Plan.parse("p1@d64:10>d384"), 1, index=partial.extend(fresh))
    assert found.ids[0, 0] == 4500


def test_bad_settings_are_named(elastic):
    store, index, queries = elastic
    with pytest.raises(InvalidInputError, match="needs an IVF index, but none was given"):
        run_plan(store, queries, Plan.parse("p8@d64:50>d384"), 10)
    with pytest.raises(InvalidInputError, match="scans f32 lists at d32, d64, d128, not at d256"):
        run_plan(store, queries, Plan.parse("p8@d256:50>d384"), 10, index=index)
    with pytest.raises(InvalidInputError, match="only the first stage can use an index"):
        Plan.parse("d32:100>p8@d64:50>d384")
    with pytest.raises(InvalidInputError, match="scan_dim 100 must be one of the nesting dims"):
        IVFIndex(n_lists=8, centroid_dim=32, scan_dim=100).build(store)
    with pytest.raises(InvalidInputError, match="n_lists 9999 exceeds the 5183 stored rows"):
        IVFIndex(n_lists=9999, centroid_dim=32, scan_dim=64).build(store)
    with pytest.raises(InvalidInputError, match="n_lists must be a positive integer, got 0"):
        IVFIndex(n_lists=0, centroid_dim=32, scan_dim=64)


def test_probe_plans_round_trip():
    for text in ["p16@d64:400>d384", "p8@d32", "p1@d32:10>d64:5>d128", "p16c32@d128:200>d384"]:
        assert str(Plan.parse(text)) == text


def test_extending_equals_assigning_everything_with_the_same_centroids(elastic, tmp_path):
    store, _, queries = elastic
    grown = BlockStore.create(tmp_path / "vectors", NESTING)
    grown.append(store.rows(np.arange(3000)))
    index = IVFIndex(n_lists=32, centroid_dim=32, scan_dim=64).build(grown)
    grown.append(store.rows(np.arange(3000, store.count)))
    index.extend(grown)
    assert index.indexed_ == store.count
    prefix = grown.rows(np.arange(store.count))[:, :32]
    similarity = (prefix / np.linalg.norm(prefix, axis=1, keepdims=True)) @ index.centroids_[32].T
    nearest = np.argmax(similarity, axis=1)
    held = np.empty(store.count, dtype=np.int64)  # the list each row is held in
    held[index.lists_.list_rows] = np.repeat(np.arange(32), index.list_sizes())
    elsewhere = np.flatnonzero(held != nearest)  # only a row equally near two centroids (float rounding) may be
    np.testing.assert_allclose(similarity[elsewhere, held[elsewhere]], similarity[elsewhere, nearest[elsewhere]],
                               rtol=1e-5)
    np.testing.assert_array_equal(index.lists_.list_rows, np.argsort(held, kind="stable"))  # by row within a list


@pytest.fixture(scope="module", params=["f16", "int8", "pq16", "pq64x4fs"])
def coded(request, elastic_scifact):
    """An IVF index over elastic SciFact whose lists hold codes of the 128-dim prefix."""
    store, queries = elastic_scifact
    return store, IVFIndex(n_lists=64, centroid_dim=32, scan_dim=128, codec=request.param).build(store), queries


def test_coded_lists_at_exhaustive_settings_are_exact_search(coded):
    store, index, queries = coded
    exact = run_plan(store, queries, Plan.exact(384), 10)
    ivf = run_plan(store, queries, Plan.parse(f"p64@d128:{store.count}>d384"), 10, index=index)
    assert_same_ranking(ivf.ids, ivf.scores, exact.ids, exact.scores)


def test_coded_lists_shortlist_well_and_count_their_work(coded):
    store, index, queries = coded
    exact = run_plan(store, queries, Plan.exact(384), 10)
    ivf = run_plan(store, queries, Plan.parse("p16@d128:200>d384"), 10, index=index)
    assert recall(ivf.ids, exact.ids) >= 0.9
    per_query = ivf.cost.per_query()
    assert per_query["lists_probed"] == 16 and per_query["candidates"][0] == 200
    assert 200 < per_query["items_scanned"] < store.count / 2
    code, table = {"f16": (256, 0), "int8": (128, 0), "pq16": (16, 256 * 128 * 4), "pq64x4fs": (32, 16 * 128 * 4)}[
        index.codec]
    centroids, rerank = 64 * 32 * 4, 200 * (384 + 1) * 4  # the re-rank reads 384 dims and a norm
    expected = centroids + table + per_query["items_scanned"] * code + rerank
    assert per_query["bytes_read"] == pytest.approx(expected)


def test_coded_lists_persist_and_follow_added_and_deleted_rows(coded, tmp_path):
    store, index, queries = coded
    plan = Plan.parse("p8@d128:100>d384")
    path = tmp_path / "ivf.npz"
    index.save(path)
    reopened = IVFIndex(n_lists=64, centroid_dim=32, scan_dim=128, codec=index.codec).load(path, store)
    before = run_plan(store, queries, plan, 10, index=index)
    np.testing.assert_array_equal(run_plan(store, queries, plan, 10, index=reopened).ids, before.ids)

    dead = np.unique(before.ids[:, 0])
    assert not np.isin(run_plan(store, queries, plan, 10, index=index, dead_rows=dead).ids, dead).any()

    grown = BlockStore.create(tmp_path / "vectors", NESTING)
    grown.append(store.rows(np.arange(3000)))
    partial = IVFIndex(n_lists=64, centroid_dim=32, scan_dim=128, codec=index.codec).build(grown)
    grown.append(store.rows(np.arange(3000, store.count)))
    partial.extend(grown)
    exact = run_plan(store, queries, Plan.exact(384), 10)
    grown_result = run_plan(grown, queries, Plan.parse(f"p64@d128:{store.count}>d384"), 10, index=partial)
    assert_same_ranking(grown_result.ids, grown_result.scores, exact.ids, exact.scores)
    assert recall(run_plan(grown, queries, plan, 10, index=partial).ids, exact.ids) >= 0.85


def test_coded_lists_may_code_a_prefix_between_nesting_dims(elastic_scifact):
    store, queries = elastic_scifact
    index = IVFIndex(n_lists=64, centroid_dim=32, scan_dim=96, codec="pq48x4fs").build(store)
    exact = run_plan(store, queries, Plan.exact(384), 10)
    ivf = run_plan(store, queries, Plan.parse(f"p64@d96:{store.count}>d384"), 10, index=index)
    assert_same_ranking(ivf.ids, ivf.scores, exact.ids, exact.scores)
    with pytest.raises(InvalidInputError, match="scan_dim 96 must be one of the nesting dims"):
        IVFIndex(n_lists=64, centroid_dim=32, scan_dim=96).build(store)


def test_coded_lists_scan_only_at_their_dim(coded):
    store, index, queries = coded
    with pytest.raises(InvalidInputError, match=f"scans {index.codec} lists at d128, not at d64"):
        run_plan(store, queries, Plan.parse("p8@d64:50>d384"), 10, index=index)
    with pytest.raises(InvalidInputError, match="IVF list codec 'int4' is not one of"):
        IVFIndex(n_lists=8, centroid_dim=32, scan_dim=128, codec="int4")
    with pytest.raises(InvalidInputError, match=r"scan dim \(128\) to be a multiple of the code bytes \(48\)"):
        IVFIndex(n_lists=8, centroid_dim=32, scan_dim=128, codec="pq48")
    with pytest.raises(InvalidInputError, match=r"scan dim \(128\) to be a multiple of the sub-spaces \(48\)"):
        IVFIndex(n_lists=8, centroid_dim=32, scan_dim=128, codec="pq48x4fs")


def test_a_query_picks_the_centroid_set_it_probes_with(elastic_scifact):
    store, queries = elastic_scifact
    index = IVFIndex(n_lists=64, centroid_dim=64, scan_dim=128, probe_dims=(32, 128)).build(store)
    exact = run_plan(store, queries, Plan.exact(384), 10)
    for probe_dim in (32, 64, 128):
        result = run_plan(store, queries[:1], Plan.parse(f"p8c{probe_dim}@d64:50>d384"), 10, metric="ip", index=index)
        scanned = result.cost.candidates[0]
        assert result.cost.multiply_adds == 64 * probe_dim + scanned * 64 + 50 * 320
        every_list = run_plan(store, queries, Plan.parse(f"p64c{probe_dim}@d64:{store.count}>d384"), 10, index=index)
        assert_same_ranking(every_list.ids, every_list.scores, exact.ids, exact.scores)
    coarse = run_plan(store, queries, Plan.parse("p16c32@d128:200>d384"), 10, index=index)
    fine = run_plan(store, queries, Plan.parse("p16c128@d128:200>d384"), 10, index=index)
    assert recall(coarse.ids, exact.ids) >= 0.85 and recall(fine.ids, exact.ids) >= recall(coarse.ids, exact.ids) - 0.02
    with pytest.raises(InvalidInputError, match="probes with centroids at d32, d64, d128, not at d16"):
        run_plan(store, queries, Plan.parse("p8c16@d64:50>d384"), 10, index=index)
    with pytest.raises(InvalidInputError, match="only an IVF stage .'p'. probes with a centroid dim"):
        Plan.parse("g8c16@d64:50>d384")


def test_adaptive_probes_spend_less_on_queries_near_one_list_and_batch_as_one_by_one(coded):
    store, index, queries = coded
    exact = run_plan(store, queries, Plan.exact(384), 10)
    fixed = run_plan(store, queries, Plan.parse("p16@d128:200>d384"), 10, index=index)
    wide = run_plan(store, queries, Plan.parse("p4-16~1.9@d128:200>d384"), 10, index=index)  # every list passes
    assert wide.ids.tolist() == fixed.ids.tolist() and wide.cost.lists_probed == fixed.cost.lists_probed
    narrow = run_plan(store, queries, Plan.parse("p4-16~0.001@d128:200>d384"), 10, index=index)  # the least
    assert narrow.cost.per_query()["lists_probed"] == 4
    adaptive = Plan.parse("p4-32~0.15@d128:200>d384")
    batch = run_plan(store, queries, adaptive, 10, index=index)
    one = [run_plan(store, q, adaptive, 10, index=index) for q in queries]
    assert_same_ranking(batch.ids, batch.scores, np.vstack([r.ids for r in one]), np.vstack([r.scores for r in one]))
    probed = [r.cost.lists_probed for r in one]
    assert min(probed) >= 4 and max(probed) <= 32 and len(set(probed)) > 3  # effort varies by query
    assert batch.cost.lists_probed == sum(probed) and batch.cost.items_scanned == sum(r.cost.items_scanned for r in one)
    assert recall(batch.ids, exact.ids) >= recall(narrow.ids, exact.ids)


def test_adaptive_probes_need_coded_lists(elastic):
    store, index, queries = elastic
    with pytest.raises(InvalidInputError, match=r"adaptive probing \(p4-16~0.2@d128:100\) needs coded lists"):
        run_plan(store, queries[:1], Plan.parse("p4-16~0.2@d128:100>d384"), 10, index=index)
    with pytest.raises(InvalidInputError, match=r"a stopping margin \(p4-16\^0.2@d128:100\) needs 4-bit fast-scan lists"):
        run_plan(store, queries[:1], Plan.parse("p4-16^0.2@d128:100>d384"), 10, index=index)
