import faiss
import numpy as np
import pytest
from conftest import NESTING, assert_same_ranking

from matsearch import BlockStore, Collection, InvalidInputError, Plan, run_plan
from matsearch.index import PQIndex, best_prefix
from matsearch.index.pq import balanced_order


@pytest.fixture(scope="module")
def elastic(elastic_scifact):
    """PQ codes of 16 bytes on the 128-dim prefix of elastic SciFact."""
    store, queries = elastic_scifact
    return store, PQIndex(dim=128, code_bytes=16).build(store), queries


def test_exhaustive_codes_then_exact_rerank_is_exact_search(elastic):
    store, codes, queries = elastic
    n = store.count
    exact = run_plan(store, queries, Plan.exact(384), 10)
    coded = run_plan(store, queries, Plan.parse(f"q@d128:{n}>d384"), 10, index=codes)
    assert_same_ranking(coded.ids, coded.scores, exact.ids, exact.scores)


def test_codes_shortlist_then_rerank_keeps_recall_and_counts_bytes(elastic):
    store, codes, queries = elastic
    exact = run_plan(store, queries, Plan.exact(384), 10)
    coded = run_plan(store, queries, Plan.parse("q@d128:200>d384"), 10, index=codes)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(coded.ids, exact.ids)])
    assert recall >= 0.9
    per_query = coded.cost.bytes_read / len(queries)
    assert per_query < store.count * 16 + 256 * 128 * 4 + 200 * 384 * 4 * 2
    assert codes.resident_bytes() / store.count < 16 + 30


def test_added_rows_are_encoded_and_codes_persist(tmp_path, scifact):
    ids, docs, queries = scifact
    with Collection.create(tmp_path / "c") as col:
        col.add(ids[:4000], vectors=docs[:4000])
        col.build("pq16@d64")
        col.add(ids[4000:], vectors=docs[4000:])
        before = col.search(queries[:20], k=5, plan="q@d64:100>d384").ids
    with Collection.open(tmp_path / "c") as col:
        np.testing.assert_array_equal(col.search(queries[:20], k=5, plan="q@d64:100>d384").ids, before)
        assert col.search(docs[4500], k=1, plan="q@d64:50>d384").ids[0, 0] == ids[4500]


def test_best_prefix_for_a_byte_budget(elastic):
    store, _, _ = elastic
    dim, recalls = best_prefix(store, 8, dims=[32, 64, 128], sample=200)
    assert set(recalls) == {32, 64, 128} and recalls[dim] == max(recalls.values())
    assert all(0 <= r <= 1 for r in recalls.values())
    with pytest.raises(InvalidInputError, match="no candidate dim is a multiple of 48 bytes"):
        best_prefix(store, 48, dims=[32, 64])


def test_bad_pq_settings(elastic):
    store, codes, queries = elastic
    with pytest.raises(InvalidInputError, match="dim \\(100\\) to be a multiple of the code bytes \\(16\\)"):
        PQIndex(dim=100, code_bytes=16)
    with pytest.raises(InvalidInputError, match="built on d128; the plan asks for d64"):
        run_plan(store, queries, Plan.parse("q@d64:100>d384"), 10, index=codes)
    with pytest.raises(InvalidInputError, match="or 'q' or 'h' without one"):
        Plan.parse("q8@d64:100>d384")


def test_full_dim_codes_can_be_rescored_exactly_at_the_same_dim(tmp_path, scifact):
    _, docs, queries = scifact
    store = BlockStore.create(tmp_path / "v", NESTING)
    store.append(docs)
    codes = PQIndex(dim=384, code_bytes=48).build(store)
    exact = run_plan(store, queries[:50], Plan.exact(384), 10)
    rescored = run_plan(store, queries[:50], Plan.parse(f"q@d384:{store.count}>d384"), 10, index=codes)
    assert_same_ranking(rescored.ids, rescored.scores, exact.ids, exact.scores)


def test_balanced_order_deals_the_strongest_dims_to_different_groups():
    energy = 0.5 ** np.arange(16)  # an elastic prefix: energy falls with the dim
    order = balanced_order(energy, 4)
    assert sorted(order) == list(range(16))
    groups = order.reshape(4, 4)
    assert sorted(groups[:, 0]) == [0, 1, 2, 3]  # each group leads with one of the four strongest
    wealth = np.log(energy)[groups].sum(axis=1)
    assert wealth.max() - wealth.min() <= np.log(2) * 4


def test_balanced_codes_rank_better_than_plain_pq_on_an_elastic_prefix(elastic):
    store, codes, queries = elastic
    exact = run_plan(store, queries, Plan.exact(384), 10).ids
    prefix = store.rows(np.arange(store.count))[:, :128]
    prefix /= np.linalg.norm(prefix, axis=1, keepdims=True)
    plain = faiss.IndexPQ(128, 16, 8, faiss.METRIC_INNER_PRODUCT)
    plain.train(prefix)
    plain.add(prefix)
    _, plain_ids = plain.search(np.ascontiguousarray(queries[:, :128]), 10)
    ours = run_plan(store, queries, Plan.parse("q@d128"), 10, index=codes).ids
    recall = lambda found: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])  # noqa: E731
    assert recall(ours) > recall(plain_ids) + 0.02
