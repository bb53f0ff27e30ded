import functools

import numpy as np
import pytest
from conftest import assert_same_ranking, brute_force, shared

from matsearch import Collection, InvalidInputError
from matsearch.data import load_beir
from matsearch.eval import ndcg_at_k
from matsearch.train.adapter import fit_adapter
from matsearch.transform import Transform

NESTING = [16, 32, 64, 128, 256]


@pytest.fixture(scope="module")
def cranfield():
    folder = shared("cranfield")
    docs = np.load(folder / "corpus.minilm.f16.npy").astype(np.float32)
    queries = np.load(folder / "queries.minilm.f16.npy").astype(np.float32)
    return docs, queries


@pytest.fixture(scope="module")
def fitted(cranfield):
    docs, _ = cranfield
    pca = Transform(kind="pca").fit(docs).matrix_
    return pca, fit_adapter(docs, pca, NESTING, steps=60, seed=3)


def overlap_at_10(docs, queries, dim):
    """Share of each query's exact full-dim top 10 found by exact search on the re-normalised prefix."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    found = np.argsort(-(unit(queries[:, :dim]) @ unit(docs[:, :dim]).T), axis=1)[:, :10]
    return np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])


def test_the_adapter_is_a_rotation_so_full_dim_cosines_are_unchanged(cranfield, fitted):
    docs, queries = cranfield
    _, matrix = fitted
    assert matrix.shape == (384, 384) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(384), atol=2e-5)
    np.testing.assert_allclose((queries @ matrix) @ (docs @ matrix).T, queries @ docs.T, atol=2e-5)


def test_adapted_prefixes_find_the_full_dim_neighbours_of_unseen_queries_better_than_pca(cranfield, fitted):
    docs, queries = cranfield  # the adapter saw documents only
    pca, matrix = fitted
    for dim, gain in ((16, 0.02), (32, 0.01), (64, 0.005)):
        adapted = overlap_at_10(docs @ matrix, queries @ matrix, dim)
        assert adapted >= overlap_at_10(docs @ pca, queries @ pca, dim) + gain, dim
    assert overlap_at_10(docs @ matrix, queries @ matrix, 128) >= overlap_at_10(docs @ pca, queries @ pca, 128) - 0.01


def test_the_same_seed_gives_the_same_adapter(cranfield):
    docs, _ = cranfield
    pca = Transform(kind="pca").fit(docs[:600]).matrix_
    first = fit_adapter(docs[:600], pca, [16, 64], steps=30, seed=1)
    np.testing.assert_array_equal(first, fit_adapter(docs[:600], pca, [16, 64], steps=30, seed=1))
    assert not np.array_equal(first, fit_adapter(docs[:600], pca, [16, 64], steps=30, seed=2))


def test_bad_adapter_inputs_are_named(cranfield):
    docs, _ = cranfield
    with pytest.raises(InvalidInputError, match=r"nesting dims below the full 384, got \[384\]"):
        fit_adapter(docs, np.eye(384, dtype=np.float32), [384])
    with pytest.raises(InvalidInputError, match=r"needs at least \d+ vectors, got 5"):
        fit_adapter(docs[:5], np.eye(384, dtype=np.float32), [16])


def test_a_collection_fits_its_adapter_on_the_first_add_and_applies_it_to_queries(tmp_path, cranfield, monkeypatch):
    docs, queries = cranfield
    import matsearch.train.adapter

    quick = functools.partial(fit_adapter, steps=10)  # this test is about the plumbing
    monkeypatch.setattr(matsearch.train.adapter, "fit_adapter", quick)
    with Collection.create(tmp_path / "col", transform="adapter") as col:
        col.add([f"d{i}" for i in range(len(docs))], vectors=docs)
        found = col.search(queries[:20], k=5, plan="d32:100>d384")
        exact = col.search(queries[:20], k=5)
    truth, cosines = brute_force(docs, queries[:20], 5, 384)  # the adapter is a rotation: cosines are kept
    assert_same_ranking(exact.ids, exact.scores, np.array([f"d{i}" for i in range(len(docs))])[truth], cosines)
    with Collection.open(tmp_path / "col") as col:
        assert col.manifest.transform == "adapter"
        np.testing.assert_array_equal(col.search(queries[:20], k=5, plan="d32:100>d384").ids, found.ids)


def test_a_saved_adapter_reloads_to_the_same_vectors(tmp_path, cranfield, fitted):
    docs, _ = cranfield
    transform = Transform(kind="adapter")
    transform.matrix_ = fitted[1]
    transform.save(tmp_path / "transform.npy")
    reloaded = Transform.load(tmp_path / "transform.npy", kind="adapter", dim=384)
    np.testing.assert_array_equal(reloaded.apply(docs), transform.apply(docs))


def test_supervision_with_training_pairs_lifts_unseen_test_queries():
    """SciFact: (claim, abstract) pairs of the train split; scored on the disjoint test claims."""
    folder = shared("scifact")
    docs = np.load(folder / "corpus.minilm.f16.npy").astype(np.float32)
    queries = np.load(folder / "queries.minilm.f16.npy").astype(np.float32)
    doc_row = {d: n for n, d in enumerate((folder / "corpus.ids.txt").read_text().split())}
    query_row = {q: n for n, q in enumerate((folder / "queries.ids.txt").read_text().split())}
    train, test = (load_beir(folder, split=split).qrels for split in ("train", "test"))
    assert not set(train) & set(test)
    rows = [(query_row[q], doc_row[d]) for q, judged in train.items() for d in judged]
    pairs = queries[[q for q, _ in rows]], docs[[d for _, d in rows]]
    pca = Transform(kind="pca").fit(docs).matrix_
    plain = fit_adapter(docs, pca, [32, 64], steps=20)
    supervised = fit_adapter(docs, pca, [32, 64], steps=20, pairs=pairs)
    np.testing.assert_allclose(supervised @ supervised.T, np.eye(384), atol=2e-5)
    judged = [query_row[q] for q in test]

    def ndcg(matrix, dim):
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        top = np.argsort(-(unit(queries[judged] @ matrix[:, :dim]) @ unit(docs @ matrix[:, :dim]).T), axis=1)[:, :10]
        names = list(doc_row)
        return np.mean([ndcg_at_k([names[i] for i in t], test[q], 10) for t, q in zip(top, test)])

    for dim in (32, 64):
        assert ndcg(supervised, dim) >= ndcg(plain, dim) + 0.03, dim
    with pytest.raises(InvalidInputError, match=r"pairs must be two \(3, 384\) arrays"):
        fit_adapter(docs, pca, [32], pairs=(queries[:3], docs[:2]))
