"""A batch of queries runs batched kernels end to end and gives what one query at a time gives.

For every index kind and for plain funnels, with deleted rows present: the same ids (up to
order among equal scores), the same scores within float tolerance, and the same cost totals.
"""

import numpy as np
import pytest
from conftest import assert_same_ranking

from matsearch import InvalidInputError, Plan, run_plan
from matsearch.index import BinaryIndex, GraphIndex, IVFIndex, PQIndex

COUNTED = ("multiply_adds", "bytes_read", "lists_probed", "items_scanned")


@pytest.fixture(scope="module")
def elastic(elastic_scifact):
    store, queries = elastic_scifact
    exact = run_plan(store, queries, Plan.exact(384), 10)
    rng = np.random.default_rng(3)
    dead = np.union1d(np.unique(exact.ids[::3, :2]), rng.choice(store.count, store.count // 20, replace=False))
    return store, queries[:40], dead


def one_at_a_time(store, queries, plan, k, **kwargs):
    return [run_plan(store, query[None], plan, k, **kwargs) for query in queries]


def assert_same(batched, singles):
    """Batched results equal the one-query results (ties as ties) and count the same work in all."""
    assert_same_ranking(batched.ids, batched.scores, np.vstack([s.ids for s in singles]),
                        np.vstack([s.scores for s in singles]))
    for name in COUNTED:
        assert getattr(batched.cost, name) == sum(getattr(s.cost, name) for s in singles), name
    per_query = np.mean([s.cost.candidates for s in singles], axis=0)
    np.testing.assert_allclose(batched.cost.candidates, per_query)
    assert len(batched.cost.stage_seconds) == len(singles[0].cost.stage_seconds)


def check(store, queries, text, dead, index=None, k=10, **kwargs):
    plan = Plan.parse(text)
    for rows in (None, dead):
        batched = run_plan(store, queries, plan, k, dead_rows=rows, index=index, **kwargs)
        assert_same(batched, one_at_a_time(store, queries, plan, k, dead_rows=rows, index=index, **kwargs))
        if rows is not None:
            assert not np.isin(batched.ids, rows).any()


@pytest.mark.parametrize("text", ["d32:400>d128:100>d384", "d32:300>d100:40>d384", "d64:50>d384", "d384"])
@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_plain_funnels(elastic, text, metric):
    store, queries, dead = elastic
    check(store, queries, text, dead, metric=metric)


@pytest.mark.parametrize("recipe, plans", [
    (dict(dim=64), ["g24@d64:20>d384", "g40@d64:40>d128:20>d384", "g16@d64"]),
    (dict(dim=128, build_dim=64, codec="int8"), ["g32@d128:30>d384"]),
    (dict(dim=96, codec="f16"), ["g24@d96:20>d100:15>d384"]),
])
def test_graph(elastic, recipe, plans):
    store, queries, dead = elastic
    index = GraphIndex(**recipe).build(store)
    for text in plans:
        check(store, queries, text, dead, index)


@pytest.mark.parametrize("codec, scan_dim, plans", [
    ("f32", 128, ["p8@d64:200>d384", "p6c64@d128:100>d256:30>d384", "p64@d32:5000>d384"]),
    ("int8", 128, ["p8@d128:100>d384", "p8c64@d128:60>d384"]),
    ("pq8", 64, ["p12@d64:150>d384"]),
    ("pq32x4fs", 64, ["p12@d64:150>d384", "p8c64@d64:60>d384"]),
])
def test_ivf(elastic, codec, scan_dim, plans):
    store, queries, dead = elastic
    index = IVFIndex(n_lists=64, centroid_dim=32, scan_dim=scan_dim, probe_dims=(64,), codec=codec).build(store)
    for text in plans:
        check(store, queries, text, dead, index)
    check(store, queries, plans[0], dead, index, metric="ip")


def test_pq(elastic):
    store, queries, dead = elastic
    index = PQIndex(dim=64, code_bytes=8).build(store)
    check(store, queries, "q@d64:200>d384", dead, index)


@pytest.mark.parametrize("recipe, plans", [
    (dict(bits=64, method="itq"), ["h@b64:1000>d128:100>d384", "h@b64:400>d384"]),
    (dict(bits=64, method="sign", lists=16, centroid_dim=32), ["h4@b64:500>d128:50>d384", "h16@b64:300>d384"]),
    (dict(bits=64, method="sign", copy=("int8", 64)), ["h@b64:1000>d64/int8:100>d384"]),
])
def test_binary(elastic, recipe, plans):
    store, queries, dead = elastic
    index = BinaryIndex(**recipe).build(store)
    for text in plans:
        check(store, queries, text, dead, index)


def test_queries_that_deletions_leave_short_fall_back_alone_within_a_batch(elastic):
    """Deleting each of some queries' nearest rows leaves those queries' graph shortlists short of k:
    they fall back to a full scan, the others stay batched, and the totals still match."""
    store, queries, _ = elastic
    index = GraphIndex(dim=64).build(store)
    plan = Plan.parse("g10@d64:10>d384")
    near = run_plan(store, queries[::4], plan, 10, index=index).ids
    dead = np.unique(near[:, :6])
    batched = run_plan(store, queries, plan, 10, dead_rows=dead, index=index)
    assert_same(batched, one_at_a_time(store, queries, plan, 10, dead_rows=dead, index=index))
    assert batched.cost.items_scanned > len(queries) // 4 * store.count  # the short ones scanned everything
    codes = BinaryIndex(bits=64, method="sign").build(store)
    plan = Plan.parse("h@b64:10>d384")
    dead = np.unique(run_plan(store, queries[::4], plan, 10, index=codes).ids[:, :6])
    batched = run_plan(store, queries, plan, 10, dead_rows=dead, index=codes)
    assert_same(batched, one_at_a_time(store, queries, plan, 10, dead_rows=dead, index=codes))


def test_a_dead_mask_is_the_same_as_dead_rows(elastic):
    store, queries, dead = elastic
    mask = np.zeros(store.count, dtype=bool)
    mask[dead] = True
    index = IVFIndex(n_lists=64, centroid_dim=32, scan_dim=128).build(store)
    for text, via in (("d32:400>d384", None), ("p8@d64:200>d384", index)):
        by_rows = run_plan(store, queries, Plan.parse(text), 10, dead_rows=dead, index=via)
        by_mask = run_plan(store, queries, Plan.parse(text), 10, dead_mask=mask, index=via)
        np.testing.assert_array_equal(by_mask.ids, by_rows.ids)
        assert by_mask.cost.multiply_adds == by_rows.cost.multiply_adds
    none_dead = run_plan(store, queries[:3], Plan.exact(384), 10, dead_mask=np.zeros(store.count, dtype=bool))
    np.testing.assert_array_equal(none_dead.ids, run_plan(store, queries[:3], Plan.exact(384), 10).ids)
    with pytest.raises(InvalidInputError, match="not both"):
        run_plan(store, queries, Plan.exact(384), 10, dead_rows=dead, dead_mask=mask)
    with pytest.raises(InvalidInputError, match="one value per stored row"):
        run_plan(store, queries, Plan.exact(384), 10, dead_mask=mask[:-1])
    with pytest.raises(InvalidInputError, match="boolean"):
        run_plan(store, queries, Plan.exact(384), 10, dead_mask=mask.astype(np.uint8))
