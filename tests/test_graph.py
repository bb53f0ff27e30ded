import numpy as np
import pytest
from conftest import NESTING, assert_same_ranking

from matsearch import BlockStore, CollectionError, InvalidInputError, Plan, run_plan
from matsearch.index import GraphIndex, IVFIndex


@pytest.fixture(scope="module")
def elastic(elastic_scifact):
    """A graph on the 64-dim prefix of elastic SciFact."""
    store, queries = elastic_scifact
    return store, GraphIndex(dim=64).build(store), queries


def recall(found, exact):
    return np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact)])


def test_an_exhaustive_walk_is_exact_search(elastic):
    store, graph, queries = elastic
    n = store.count
    exact = run_plan(store, queries[:40], Plan.parse(f"d64:{n}>d384"), 10)
    walked = run_plan(store, queries[:40], Plan.parse(f"g{n}@d64:{n}>d384"), 10, index=graph)
    assert_same_ranking(walked.ids, walked.scores, exact.ids, exact.scores)


def test_a_short_walk_keeps_recall_at_a_fraction_of_the_cost(elastic):
    store, graph, queries = elastic
    exact = run_plan(store, queries, Plan.exact(384), 10)
    walked = run_plan(store, queries, Plan.parse("g64@d64:100>d384"), 10, index=graph)
    assert recall(walked.ids, exact.ids) >= 0.95
    assert walked.cost.multiply_adds < exact.cost.multiply_adds / 4
    assert walked.cost.candidates == [100, 100]


def test_deleted_rows_never_come_back_and_new_rows_are_inserted(elastic, tmp_path):
    store, graph, queries = elastic
    exact = run_plan(store, queries, Plan.exact(384), 3)
    dead = np.unique(exact.ids[:, 0])
    walked = run_plan(store, queries, Plan.parse("g64@d64:100>d384"), 3, dead_rows=dead, index=graph)
    assert not np.isin(walked.ids, dead).any()
    fresh = BlockStore.create(tmp_path / "vectors", NESTING)
    fresh.append(store.rows(np.arange(4000)))
    partial = GraphIndex(dim=64, neighbors=16).build(fresh)
    fresh.append(store.rows(np.arange(4000, store.count)))
    plan, query = Plan.parse("g16@d64:10>d384"), store.rows(np.array([4321]))
    with pytest.raises(InvalidInputError, match="the index covers 4000 rows but the store holds 5183"):
        run_plan(fresh, query, plan, 1, index=partial)
    assert run_plan(fresh, query, plan, 1, index=partial.extend(fresh)).ids[0, 0] == 4321


def test_the_graph_must_match_the_plan(elastic):
    store, graph, queries = elastic
    with pytest.raises(InvalidInputError, match="this graph is built on d64; the plan asks for d32"):
        run_plan(store, queries, Plan.parse("g64@d32:100>d384"), 10, index=graph)
    ivf = IVFIndex(n_lists=8, centroid_dim=32, scan_dim=64).build(store)
    with pytest.raises(InvalidInputError, match="needs a graph index, but an IVF index was given"):
        run_plan(store, queries, Plan.parse("g64@d64:100>d384"), 10, index=ivf)
    with pytest.raises(InvalidInputError, match="graph dim 512 exceeds the stored vectors' 384"):
        GraphIndex(dim=512).build(store)


@pytest.mark.parametrize("codec", ["f32", "f16", "int8"])
def test_a_graph_linked_on_a_shorter_prefix_is_exact_when_exhaustive_and_survives_a_save(elastic, codec, tmp_path):
    store, _, queries = elastic
    graph = GraphIndex(dim=128, build_dim=64, codec=codec).build(store)
    n = store.count
    exact = run_plan(store, queries[:40], Plan.exact(384), 10)
    walked = run_plan(store, queries[:40], Plan.parse(f"g{n}@d128:{n}>d384"), 10, index=graph)
    assert_same_ranking(walked.ids, walked.scores, exact.ids, exact.scores)  # lossy copies are re-scored exactly
    plan = Plan.parse("g64@d128:100>d384")
    short = run_plan(store, queries, plan, 10, index=graph)
    assert recall(short.ids, run_plan(store, queries, Plan.exact(384), 10).ids) >= 0.95
    graph.save(tmp_path / "hnsw.faiss")
    again = GraphIndex(dim=128, build_dim=64, codec=codec).load(tmp_path / "hnsw.faiss", store)
    np.testing.assert_array_equal(run_plan(store, queries, plan, 10, index=again).ids, short.ids)
    assert again.resident_bytes() / n < 128 * {"f32": 4, "f16": 2, "int8": 1}[codec] + 400


def test_a_saved_graph_of_another_codec_is_refused(elastic, tmp_path):
    store, graph, _ = elastic
    graph.save(tmp_path / "hnsw.faiss")
    with pytest.raises(CollectionError, match="does not match its recipe"):
        GraphIndex(dim=64, codec="int8").load(tmp_path / "hnsw.faiss", store)


@pytest.mark.parametrize("kwargs, message", [
    ({"dim": 64, "build_dim": 128}, "build dim 128 exceeds its search dim 64"),
    ({"dim": 64, "codec": "int4"}, "graph codec 'int4' is not one of"),
    ({"dim": 64, "build_dim": 0}, "build_dim must be a positive integer, got 0"),
])
def test_bad_graph_settings_are_named(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        GraphIndex(**kwargs)
