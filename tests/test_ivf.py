import numpy as np
import pytest
from conftest import NESTING

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
    assert sorted(index.list_rows_) == list(range(store.count))
    assert index.list_sizes().sum() == store.count and len(index.list_sizes()) == 64


@pytest.mark.parametrize("dim", [32, 64, 128])
def test_exhaustive_probing_is_exact_search(elastic, dim):
    store, index, queries = elastic
    exact = run_plan(store, queries, Plan.parse(f"d{dim}:{store.count}>d384"), 10)
    ivf = run_plan(store, queries, Plan.parse(f"p64@d{dim}:{store.count}>d384"), 10, index=index)
    np.testing.assert_array_equal(ivf.ids, exact.ids)
    np.testing.assert_allclose(ivf.scores, exact.scores, rtol=1e-5)


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
    with pytest.raises(InvalidInputError, match="scans at nesting dims up to 128, not at d256"):
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
    for text in ["p16@d64:400>d384", "p8@d32", "p1@d32:10>d64:5>d128"]:
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
    lists = np.argmax((prefix / np.linalg.norm(prefix, axis=1, keepdims=True)) @ index.centroids_.T, axis=1)
    np.testing.assert_array_equal(index.list_rows_, np.argsort(lists, kind="stable"))
    np.testing.assert_array_equal(np.diff(index.offsets_), np.bincount(lists, minlength=32))
