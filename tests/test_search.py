import numpy as np
import pytest

from conftest import assert_same_ranking, brute_force
from matsearch import BlockStore, CollectionError, InvalidInputError, Plan, run_plan
from matsearch.transform import Transform


def make_store(tmp_path, vectors, nesting):
    store = BlockStore.create(tmp_path / "vectors", nesting)
    store.append(vectors)
    return store


@pytest.mark.parametrize("metric", ["cosine", "ip"])
@pytest.mark.parametrize("dim", [8, 16, 20, 64])
def test_exact_search_at_any_prefix_matches_numpy(tmp_path, synthetic, metric, dim):
    docs, queries = synthetic
    store = make_store(tmp_path, docs, [8, 16, 32, 64])
    result = run_plan(store, queries, Plan.exact(dim), 10, metric=metric)
    ids, scores = brute_force(docs, queries, 10, dim, metric)
    assert_same_ranking(result.ids, result.scores, ids, scores, rtol=1e-4, atol=1e-5)


def test_batched_and_one_at_a_time_agree(tmp_path, synthetic):
    docs, queries = synthetic
    store = make_store(tmp_path, docs, [16, 32, 64])
    plan = Plan.parse("d16:50>d64")
    batched = run_plan(store, queries, plan, 5)
    for n, query in enumerate(queries):
        single = run_plan(store, query[None], plan, 5)  # one query is scanned by another kernel than a batch
        assert_same_ranking(single.ids, single.scores, batched.ids[n:n + 1], batched.scores[n:n + 1])


def test_funnel_at_exhaustive_settings_is_exact_search(tmp_path, scifact):
    _, docs, queries = scifact
    store = make_store(tmp_path, docs, [16, 32, 64, 128, 256, 384])
    n = len(docs)
    exact = run_plan(store, queries[:200], Plan.exact(384), 10)
    funnel = run_plan(store, queries[:200], Plan.parse(f"d16:{n}>d64:{n - 1}>d384"), 10)
    assert_same_ranking(funnel.ids, funnel.scores, exact.ids, exact.scores)
    assert_same_ranking(exact.ids, exact.scores, *brute_force(docs, queries[:200], 10, 384))


def test_cheap_funnel_keeps_recall_on_scifact(tmp_path, scifact):
    """A plan at ≤ ¼ of exact cost finds ≥ 95% of the exact top-10 (PCA-elastic SciFact vectors)."""
    _, docs, queries = scifact
    transform = Transform(kind="pca").fit(docs)
    store = make_store(tmp_path, transform.apply(docs), [16, 32, 64, 128, 256, 384])
    q = transform.apply(queries)
    exact = run_plan(store, q, Plan.exact(384), 10)
    funnel = run_plan(store, q, Plan.parse("d64:100>d384"), 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(funnel.ids, exact.ids)])
    assert funnel.cost.multiply_adds <= exact.cost.multiply_adds / 4
    assert recall >= 0.95


def test_cost_record_counts_the_work(tmp_path, synthetic):
    docs, queries = synthetic
    store = make_store(tmp_path, docs, [16, 32, 64])
    result = run_plan(store, queries, Plan.parse("d16:100>d32:40>d64"), 5, metric="ip")
    n, q = len(docs), len(queries)
    assert result.cost.candidates == [n, 100, 40]
    assert result.cost.multiply_adds == q * (n * 16 + 100 * 16 + 40 * 32)
    assert result.cost.bytes_read == 4 * result.cost.multiply_adds
    assert result.cost.queries == q and result.cost.seconds > 0
    cosine = run_plan(store, queries, Plan.parse("d16:100>d32:40>d64"), 5)
    assert cosine.cost.bytes_read == 4 * (cosine.cost.multiply_adds + q * (n + 100 + 40))


def test_dead_rows_are_never_returned(tmp_path, synthetic):
    docs, queries = synthetic
    store = make_store(tmp_path, docs, [16, 64])
    exact = run_plan(store, queries, Plan.exact(64), 3)
    dead = np.unique(exact.ids[:, 0])
    result = run_plan(store, queries, Plan.parse("d16:20>d64"), len(docs) - len(dead), dead_rows=dead)
    assert not np.isin(result.ids, dead).any()
    assert sorted(result.ids[0]) == sorted(set(range(len(docs))) - set(dead))


@pytest.mark.parametrize("k", [0, -1, 601, 2.5, True])
def test_k_out_of_range_is_rejected(tmp_path, synthetic, k):
    docs, queries = synthetic
    store = make_store(tmp_path, docs, [64])
    with pytest.raises(InvalidInputError, match=rf"k={k!r} is out of range: the collection holds 600"):
        run_plan(store, queries, Plan.exact(64), k)


def test_unknown_metric_is_rejected(tmp_path, synthetic):
    docs, queries = synthetic
    store = make_store(tmp_path, docs, [64])
    with pytest.raises(InvalidInputError, match="metric 'hamming' is not one of"):
        run_plan(store, queries, Plan.exact(64), 3, metric="hamming")


def test_store_reopens_with_the_same_rows_and_truncates_a_tail(tmp_path, synthetic):
    docs, _ = synthetic
    store = make_store(tmp_path, docs[:400], [16, 64])
    store.append(docs[400:])
    reopened = BlockStore(tmp_path / "vectors", [16, 64], 600)
    np.testing.assert_array_equal(reopened.rows(np.arange(600)), docs)
    reopened.truncate(450)
    with pytest.raises(CollectionError, match="holds 450 rows, the collection has 600"):
        BlockStore(tmp_path / "vectors", [16, 64], 600)
    np.testing.assert_array_equal(BlockStore(tmp_path / "vectors", [16, 64], 450).rows(np.arange(450)), docs[:450])


def test_missing_prefix_norms_are_rebuilt(tmp_path, synthetic):
    docs, queries = synthetic
    store = make_store(tmp_path, docs, [16, 64])
    before = run_plan(store, queries, Plan.parse("d16:50>d64"), 5)
    norms = tmp_path / "vectors" / "prefix-norms.f32"
    norms.unlink()
    read_only = BlockStore(tmp_path / "vectors", [16, 64], 600)
    assert not norms.exists()  # a reader computes them in memory, never writes
    after = run_plan(read_only, queries, Plan.parse("d16:50>d64"), 5)
    np.testing.assert_array_equal(before.ids, after.ids)
    np.testing.assert_allclose(after.scores, before.scores, rtol=1e-6)
    BlockStore(tmp_path / "vectors", [16, 64], 600, writable=True)
    assert norms.stat().st_size == 600 * 2 * 4


def test_duplicate_items_rank_the_same_in_the_funnel_as_in_exact_search(tmp_path, synthetic):
    docs, queries = synthetic
    docs = np.vstack([docs, docs[:50]])  # rows 600..649 tie exactly with rows 0..49
    store = make_store(tmp_path, docs, [16, 64])
    exact = run_plan(store, queries, Plan.exact(64), 20)
    funnel = run_plan(store, queries, Plan.parse(f"d16:{len(docs)}>d64"), 20)
    # a kernel may round the same product differently at another position: a pair's order is not fixed
    assert_same_ranking(funnel.ids, funnel.scores, exact.ids, exact.scores)
    for result in (exact, funnel):  # but both copies of a row score the same
        scored = [dict(zip(ids.tolist(), scores.tolist())) for ids, scores in zip(result.ids, result.scores)]
        pairs = [(score[row - 600], score[row]) for score in scored for row in score if row - 600 in score]
        assert len(pairs) >= 10
        np.testing.assert_allclose(*np.array(pairs).T, rtol=1e-6)


def test_a_dim_between_boundaries_counts_the_norms_it_computes(tmp_path, synthetic):
    docs, queries = synthetic
    store = make_store(tmp_path, docs, [16, 64])
    result = run_plan(store, queries, Plan.exact(20), 5)
    assert result.cost.multiply_adds == len(queries) * len(docs) * (20 + 4)
    assert result.cost.bytes_read == len(queries) * len(docs) * (20 + 1 + 4) * 4


def test_queries_are_validated(tmp_path, synthetic):
    docs, queries = synthetic
    store = make_store(tmp_path, docs, [64])
    with pytest.raises(InvalidInputError, match="queries have width 32, expected 64"):
        run_plan(store, queries[:, :32], Plan.exact(64), 3)
