"""The l2 metric through every plan kind: exact search equals numpy's, every index finds its top 10, and
scores are −‖q − x‖² (best first)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shared
from matsearch import BlockStore, Collection, InvalidInputError
from matsearch.cli import app
from matsearch.index import IVFIndex
from matsearch.plan import Plan
from matsearch.search import run_plan

N, Q, K = 2000, 40, 10
RECIPE = "ivf32@d64:d128,hnsw16@d64,pq8@d64,bin64/itq+ivf16@d64+int8@d64"
PLANS = ["d32:300>d384", "p16@d128:300>d384", "g200@d64:200>d384", "q@d64:400>d384", "h@b64:1200>d384",
         "h8@b64:1200>d64/int8:300>d384"]


def exact_l2(docs, queries, k=K, rows=None):
    """Rows of the k nearest docs (among `rows`) by Euclidean distance, and their squared distances."""
    rows = np.arange(len(docs)) if rows is None else rows
    squared = (np.sum(queries.astype(np.float64) ** 2, axis=1)[:, None] + np.sum(docs[rows].astype(np.float64) ** 2,
               axis=1)[None, :] - 2 * queries.astype(np.float64) @ docs[rows].T.astype(np.float64))
    order = np.argsort(squared, axis=1, kind="stable")[:, :k]
    return rows[order], np.take_along_axis(squared, order, axis=1)


def recall(found, truth) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def data(scifact):
    """2,000 SciFact vectors scaled by 0.5-2 (so l2 ranks unlike cosine), their ids and texts, scaled queries."""
    ids, docs, queries = scifact
    rng = np.random.default_rng(0)
    docs = (docs[:N] * rng.uniform(0.5, 2.0, size=(N, 1))).astype(np.float32)
    queries = (queries[:Q] * rng.uniform(0.5, 2.0, size=(Q, 1))).astype(np.float32)
    lines = [json.loads(line) for line, _ in zip(open(shared("scifact") / "corpus.jsonl"), range(N))]
    assert [r["_id"] for r in lines] == ids[:N]
    return np.array(ids[:N], dtype=object), docs, queries, [r["title"] + " " + r["text"] for r in lines]


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    """An l2 collection of the data with every index kind, and what each plan found before it was closed."""
    ids, docs, queries, texts = data
    path = tmp_path_factory.mktemp("l2") / "col"
    with Collection.create(path, model=None, metric="l2") as col:
        col.add(list(ids), vectors=docs, texts=texts, metadata=[{"n": i, "even": i % 2 == 0} for i in range(N)])
        col.build(RECIPE)
        fresh = {plan: col.search(queries, k=K, plan=plan) for plan in ["d384", *PLANS]}
    return path, fresh


@pytest.fixture(scope="module")
def collection(built):
    return built[0]


def test_exact_search_is_numpy_brute_force_with_minus_squared_distances(collection, data):
    ids, docs, queries, _ = data
    truth, squared = exact_l2(docs, queries)
    with Collection.open(collection) as col:
        assert col.info()["metric"] == "l2"
        ties = np.isclose(squared[:, :, None], squared[:, None, :], rtol=1e-5).sum(axis=2) > 1
        for at, result in [(slice(None), col.search(queries, k=K))] + [(slice(q, q + 1), col.search(queries[q], k=K))
                                                                       for q in range(5)]:
            np.testing.assert_allclose(-result.scores, squared[at], rtol=1e-4, atol=1e-4)
            want = np.where(ties[at], None, ids[truth[at]])
            np.testing.assert_array_equal(np.where(ties[at], None, result.ids), want)
        assert (np.diff(col.search(queries, k=K).scores, axis=1) <= 0).all()  # best (nearest) first


@pytest.mark.parametrize("plan", PLANS)
def test_every_plan_kind_finds_the_nearest_items(collection, data, plan):
    ids, docs, queries, _ = data
    truth = ids[exact_l2(docs, queries)[0]]
    with Collection.open(collection) as col:
        batch = col.search(queries, k=K, plan=plan)
        singles = np.vstack([col.search(q, k=K, plan=plan).ids for q in queries[:8]])
    assert recall(batch.ids, truth) >= 0.95 and recall(singles, truth[:8]) >= 0.95
    assert (batch.scores <= 0).all() and (np.diff(batch.scores, axis=1) <= 0).all()


def test_the_data_ranks_unlike_cosine_and_inner_product(data):
    _, docs, queries, _ = data
    truth = exact_l2(docs, queries)[0]
    cosine = np.argsort(-(queries @ docs.T) / np.linalg.norm(docs, axis=1), axis=1)[:, :K]
    assert recall(cosine, truth) < 0.5 and recall(np.argsort(-(queries @ docs.T), axis=1)[:, :K], truth) < 0.2


@pytest.mark.parametrize("plan", ["g200@d64", "p32@d128", "d64"])
def test_a_plan_ending_on_an_index_scores_minus_the_squared_distance_on_its_prefix(collection, data, plan):
    ids, docs, queries, _ = data
    dim = Plan.parse(plan).stages[-1].dim
    with Collection.open(collection) as col:
        result = col.search(queries[:5], k=K, plan=plan)
        stored, elastic = col.transform.apply(docs)[:, :dim], col.transform.apply(queries[:5])[:, :dim]
    rows = {i: n for n, i in enumerate(ids)}
    want = [[np.sum((stored[rows[i]] - q) ** 2) for i in row] for row, q in zip(result.ids, elastic)]
    np.testing.assert_allclose(-result.scores, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("codec", ["f32", "int8", "f16", "pq16", "pq32x4fs"])
def test_ivf_lists_of_every_codec_rank_by_distance_and_survive_a_reload(data, tmp_path, codec):
    _, docs, queries, _ = data
    store = BlockStore.create(tmp_path / "vectors", [32, 64, 128, 384])
    store.append(docs)
    index = IVFIndex(n_lists=32, centroid_dim=64, scan_dim=128, codec=codec, metric="l2").build(store)
    truth = exact_l2(docs, queries)[0]
    nearest = np.sort(exact_l2(index.centroids_[64], queries[:, :64], k=5)[0], axis=1)  # probed by distance
    np.testing.assert_array_equal(index.probe_batch(queries, 5), nearest)
    np.testing.assert_array_equal(np.vstack([index.probe(q, 5) for q in queries]), nearest)
    plans = ["p12@d128:300>d384"] + ([] if codec == "f32" else ["p4-32~0.3@d128:300>d384"])
    for plan in map(Plan.parse, plans):
        batch = run_plan(store, queries, plan, K, metric="l2", index=index)
        singles = np.vstack([run_plan(store, q, plan, K, metric="l2", index=index).ids for q in queries[:8]])
        assert recall(batch.ids, truth) >= 0.95 and recall(singles, truth[:8]) >= 0.95, plan
    everything = run_plan(store, queries, Plan.parse(f"p32@d128:{N}>d384"), K, metric="l2", index=index)
    exact = run_plan(store, queries, Plan.exact(384), K, metric="l2")
    np.testing.assert_array_equal(everything.ids, exact.ids)  # exhaustive settings give exact search
    np.testing.assert_allclose(everything.scores, exact.scores, rtol=1e-5)
    index.save(tmp_path / "ivf.npz")
    loaded = IVFIndex(n_lists=32, centroid_dim=64, scan_dim=128, codec=codec, metric="l2").load(tmp_path / "ivf.npz",
                                                                                                   store)
    plan = Plan.parse(plans[-1])
    np.testing.assert_array_equal(run_plan(store, queries, plan, K, metric="l2", index=loaded).ids,
                                  run_plan(store, queries, plan, K, metric="l2", index=index).ids)


@pytest.mark.parametrize("plan", ["d384", "d32:300>d384", "p16@d128:300>d384", "g200@d64:200>d384",
                                  "q@d64:400>d384", "h@b64:1200>d384"])
@pytest.mark.parametrize("where", [{"n": {"$lt": 100}}, {"even": True}], ids=["5%", "50%"])
def test_filtered_search_finds_the_nearest_matching_items(collection, data, plan, where):
    ids, docs, queries, _ = data
    allowed = np.arange(100) if "n" in where else np.arange(0, N, 2)
    truth, squared = exact_l2(docs, queries, rows=allowed)
    with Collection.open(collection) as col:
        result = col.search(queries, k=K, plan=plan, filter=where)
    assert result.cost.matched == len(allowed) and recall(result.ids, ids[truth]) >= 0.95
    if plan == "d384":
        np.testing.assert_allclose(-result.scores, squared, rtol=1e-4, atol=1e-4)


def test_hybrid_search_fuses_the_nearest_items(collection, data):
    ids, docs, queries, texts = data
    words = [texts[int(row)][:80] for row in exact_l2(docs, queries[:5], k=1)[0][:, 0]]
    with Collection.open(collection) as col:
        dense = col.search(queries[:5], k=K, plan="g200@d64:200>d384")
        only_dense = col.search(words, k=K, plan="g200@d64:200>d384", mode="hybrid", fusion="weighted:w1",
                                query_vectors=queries[:5])
        fused = col.search(words, k=K, mode="hybrid", query_vectors=queries[:5], filter={"even": True})
    np.testing.assert_array_equal(only_dense.ids, dense.ids)  # all weight on the dense list: its order
    assert fused.mode == "hybrid" and all(int(i) % 2 == 0 for i in [ids.tolist().index(x) for x in fused.ids.ravel()])


def test_a_reopened_collection_loads_its_indexes_and_searches_as_built(built, data):
    path, fresh = built
    with Collection.open(path) as col:
        for plan, result in fresh.items():
            again = col.search(data[2], k=K, plan=plan)
            np.testing.assert_array_equal(again.ids, result.ids)
            np.testing.assert_allclose(again.scores, result.scores, rtol=1e-6)


def test_a_bad_metric_is_named(tmp_path):
    with pytest.raises(InvalidInputError, match="metric 'euclid' is not one of \\('cosine', 'ip', 'l2'\\)"):
        Collection.create(tmp_path / "col", model=None, metric="euclid")
    with pytest.raises(InvalidInputError, match="metric 'L2' is not one of"):
        run_plan(BlockStore.create(tmp_path / "v", [4]), np.ones((1, 4), np.float32), Plan.exact(4), 1, metric="L2")


def test_cli_index_with_metric_l2(data, tmp_path):
    ids, docs, queries, _ = data
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"_id": i, "text": f"doc {i}"}) + "\n" for i in ids[:500]))
    np.save(tmp_path / "vectors.npy", docs[:500])
    runner = CliRunner()
    made = runner.invoke(app, ["index", str(source), "--collection", str(tmp_path / "col"), "--vectors",
                               str(tmp_path / "vectors.npy"), "--metric", "l2", "--recipe", "hnsw16@d64", "--json"])
    assert made.exit_code == 0, made.output
    with Collection.open(tmp_path / "col") as col:
        assert col.info()["metric"] == "l2"
        found = col.search(queries, k=K, plan="g100@d64:100>d384")
    assert recall(found.ids, ids[exact_l2(docs[:500], queries)[0]]) >= 0.95
    bad = runner.invoke(app, ["index", str(source), "--collection", str(tmp_path / "bad"), "--vectors",
                              str(tmp_path / "vectors.npy"), "--metric", "manhattan"])
    assert bad.exit_code == 1 and "metric 'manhattan' is not one of" in bad.output
