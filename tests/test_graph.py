import numpy as np
import pytest

from matsearch import BlockStore, InvalidInputError, Plan, run_plan
from matsearch.index import GraphIndex, IVFIndex
from matsearch.transform import Transform

NESTING = [32, 64, 128, 256, 384]


@pytest.fixture(scope="module")
def elastic(scifact, tmp_path_factory):
    """SciFact made elastic by PCA, in a store, with a graph on its 64-dim prefix."""
    _, docs, queries = scifact
    transform = Transform(kind="pca").fit(docs)
    store = BlockStore.create(tmp_path_factory.mktemp("graph") / "vectors", NESTING)
    store.append(transform.apply(docs))
    return store, GraphIndex(dim=64).build(store), transform.apply(queries[:200])


def recall(found, exact):
    return np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact)])


def test_an_exhaustive_walk_is_exact_search(elastic):
    store, graph, queries = elastic
    n = store.count
    exact = run_plan(store, queries[:40], Plan.parse(f"d64:{n}>d384"), 10)
    walked = run_plan(store, queries[:40], Plan.parse(f"g{n}@d64:{n}>d384"), 10, index=graph)
    np.testing.assert_array_equal(walked.ids, exact.ids)
    np.testing.assert_allclose(walked.scores, exact.scores, rtol=1e-5)


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
