"""Lexical (BM25) and hybrid search: exact-word matches, deletions and adds followed, the index saved and
repaired, fusion computed by hand, bad input named, and hybrid beating dense on Cranfield."""

import json

import bm25s
import numpy as np
import pytest
import Stemmer
from conftest import BUNDLED, shared
from typer.testing import CliRunner

from matsearch import Collection, InvalidInputError
from matsearch.cli import app
from matsearch.collection import lexical
from matsearch.collection.check import check_collection
from matsearch.data import load_beir
from matsearch.eval import evaluate
from matsearch.fusion import Fusion, reciprocal_rank_fusion, weighted_fusion

TEXTS = {
    "wing": "The wing stalls at a high angle of attack",
    "heat": "Heat transfer in a hypersonic boundary layer",
    "shell": "Buckling of thin cylindrical shells under axial load",
    "jet": "Noise radiated by supersonic jet engines",
    "zep": "A zeppelin drifts over the airfield",
    "blank": None,
    "stop": "the of and",
}


@pytest.fixture
def small(tmp_path):
    """Seven items with 8-dim vectors (one-hot-ish, so dense results are known) and texts, vectors only model."""
    path = tmp_path / "col"
    vectors = np.eye(len(TEXTS), 8, dtype=np.float32) + 0.01
    with Collection.create(path, model=None, transform="none") as col:
        col.add(list(TEXTS), texts=list(TEXTS.values()), vectors=vectors)
    return path, vectors


def lexical_ids(result, q=0):
    return [i for i in result.ids[q] if i is not None]


def test_lexical_finds_the_exact_word_and_only_items_that_match(small):
    path, _ = small
    with Collection.open(path) as col:
        result = col.search(["zeppelin", "shell buckling", "the of"], k=3, mode="lexical")
        assert result.mode == "lexical" and result.plan == "bm25"
        assert [lexical_ids(result, q) for q in range(3)] == [["zep"], ["shell"], []]
        assert result.ids[0].tolist() == ["zep", None, None] and result.scores[0, 0] > 0
        assert np.isneginf(result.scores[0, 1:]).all()
        # a text query on a collection with text but no model is lexical by default
        assert col.search("zeppelin", k=1).mode == "lexical"


def test_deleted_items_never_come_back(small):
    path, vectors = small
    with Collection.open(path, writable=True) as col:
        col.delete(["zep"])
        assert lexical_ids(col.search("zeppelin", k=3, mode="lexical")) == []
        hybrid = col.search("zeppelin", k=6, mode="hybrid", query_vectors=vectors[4:5])
        assert "zep" not in hybrid.ids[0] and hybrid.ids.shape == (1, 6) and None not in hybrid.ids[0]
    with Collection.open(path) as col:
        assert lexical_ids(col.search("zeppelin", k=3, mode="lexical")) == []
        assert "zep" not in col.search("zeppelin", k=6, mode="hybrid", query_vectors=vectors[4:5]).ids[0]


def test_items_added_after_the_index_was_saved_are_found(small):
    path, vectors = small
    with Collection.open(path) as reader:
        assert lexical_ids(reader.search("blimp", k=2, mode="lexical")) == []  # loads the saved index
        with Collection.open(path, writable=True) as col:
            col.search("zeppelin", k=1, mode="lexical")
            col.add(["blimp"], texts=["A blimp moored beside the zeppelin"], vectors=vectors[:1])
            assert lexical_ids(col.search("blimp", k=2, mode="lexical")) == ["blimp"]  # the writer, in memory
        assert lexical_ids(reader.search("blimp", k=2, mode="lexical")) == ["blimp"]  # a reader that stayed open
        assert set(lexical_ids(reader.search("zeppelin", k=3, mode="lexical"))) == {"zep", "blimp"}
    saved = lexical.current_folder(path)
    assert json.loads((saved / "meta.json").read_text())["rows"] == len(TEXTS) + 1  # the writer saved it on close


def test_compaction_renumbers_rows_and_the_lexical_index_follows(small):
    path, vectors = small
    with Collection.open(path) as reader:
        assert lexical_ids(reader.search("zeppelin", k=1, mode="lexical")) == ["zep"]
        with Collection.open(path, writable=True) as col:
            col.delete(["wing", "heat"])
            col.compact()
            assert lexical_ids(col.search("zeppelin", k=1, mode="lexical")) == ["zep"]  # now at row 2, not 4
            assert lexical_ids(col.search("jet noise", k=1, mode="lexical")) == ["jet"]
        assert lexical_ids(reader.search("zeppelin", k=1, mode="lexical")) == ["zep"]
        assert lexical_ids(reader.search("hypersonic", k=1, mode="lexical")) == []
    assert json.loads((lexical.current_folder(path) / "meta.json").read_text())["rows"] == len(TEXTS) - 2
    assert check_collection(path) == []


def test_the_index_round_trips_through_its_files(small, monkeypatch):
    path, vectors = small
    with Collection.open(path) as col:
        before = col.search(["zeppelin airfield", "hypersonic heat"], k=3, mode="lexical")
    monkeypatch.setattr(lexical.LexicalIndex, "extend", lambda *a: pytest.fail("the saved index was rebuilt"))
    with Collection.open(path) as col:
        after = col.search(["zeppelin airfield", "hypersonic heat"], k=3, mode="lexical")
    assert after.ids.tolist() == before.ids.tolist()
    np.testing.assert_array_equal(after.scores, before.scores)


def test_a_damaged_lexical_file_is_found_and_rebuilt_and_never_blocks_dense_search(small, caplog):
    path, vectors = small
    with Collection.open(path) as col:
        before = col.search(vectors[:3], k=2).ids.tolist()
    damaged = lexical.current_folder(path) / "data.csc.index.npy"
    damaged.write_bytes(np.random.default_rng(0).bytes(damaged.stat().st_size))
    problems = check_collection(path)
    assert [(p.file, p.derived) for p in problems] == [(str(damaged), True)], problems
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 1 and "data.csc.index.npy" in result.output and "checksum" in result.output
    with Collection.open(path) as col:
        assert col.search(vectors[:3], k=2).ids.tolist() == before  # dense never reads the lexical index
        assert lexical_ids(col.search("zeppelin", k=1, mode="lexical")) == ["zep"]  # rebuilt in memory
    assert "data.csc.index.npy" in caplog.text and "matsearch build" in caplog.text
    result = CliRunner().invoke(app, ["build", str(path)])
    assert result.exit_code == 0, result.output
    assert check_collection(path) == [] and lexical.current_folder(path).name == "lexical.2"
    (lexical.current_folder(path) / "meta.json").unlink()
    assert "meta.json" in check_collection(path)[0].file
    lexical.current_folder(path).rename(path / "elsewhere")
    assert "lexical index is missing" in check_collection(path)[0].problem
    with Collection.open(path, writable=True) as col:
        assert col.repair() == [str(path / "lexical.1")] and check_collection(path) == []


def test_rrf_and_weighted_fusion_by_hand():
    ids, scores = reciprocal_rank_fusion([["a", "b", "c"], ["c", "d", "a"]], k=60)
    assert ids == ["a", "c", "b", "d"]  # a and c tie (1/61 + 1/63): the order they were met in
    np.testing.assert_allclose(scores, [1 / 61 + 1 / 63, 1 / 63 + 1 / 61, 1 / 62, 1 / 62])
    assert reciprocal_rank_fusion([["a", "b"], ["b"]], k=1, top=1) == (["b"], pytest.approx([1 / 3 + 1 / 2]))
    ids, scores = weighted_fusion([(["a", "b", "c"], [0.9, 0.5, 0.1]), (["c", "d"], [8.0, 4.0])], [0.25, 0.75])
    assert ids == ["c", "a", "b", "d"]  # c: 0.25·0 + 0.75·1; a: 0.25; b: 0.25·0.5; d: 0.75·0
    np.testing.assert_allclose(scores, [0.75, 0.25, 0.125, 0.0])
    assert str(Fusion.parse("rrf")) == "rrf:k60:n100" and str(Fusion.parse("weighted:n50:w0.3")) == "weighted:w0.3:n50"
    assert Fusion.parse(str(Fusion(method="weighted", weight=0.7, depth=20))) == Fusion("weighted", 60, 20, 0.7)
    for text, message in [("rrf:w0.5", r"malformed part 'w0.5' \(rrf takes k<k> and n<depth>"),
                          ("borda", "method 'borda' is not one of"), ("rrf:k0", "k must be a positive integer, got 0"),
                          ("weighted:w1.5", "weight must be a number from 0 to 1, got 1.5")]:
        with pytest.raises(InvalidInputError, match=message):
            Fusion.parse(text)


def test_bad_input_is_named(small):
    path, vectors = small
    with Collection.open(path) as col:
        with pytest.raises(InvalidInputError, match=r"mode 'sparse' is not one of \('dense', 'lexical', 'hybrid'\)"):
            col.search("zeppelin", mode="sparse")
        with pytest.raises(InvalidInputError, match="lexical search needs text queries .*got ndarray of vectors"):
            col.search(vectors[0], mode="lexical")
        with pytest.raises(InvalidInputError, match="hybrid search needs text queries"):
            col.search(vectors[:2], mode="hybrid")
        with pytest.raises(InvalidInputError, match="hybrid search embeds the query texts, but collection .* has no "
                                                    r"model \(created with model=None\): use mode='lexical'"):
            col.search("zeppelin", mode="hybrid")
        with pytest.raises(InvalidInputError, match="has no model"):
            col.search("zeppelin", mode="dense")
        with pytest.raises(InvalidInputError, match="fusion rrf applies to hybrid search only, not mode 'lexical'"):
            col.search("zeppelin", mode="lexical", fusion="rrf")
        with pytest.raises(InvalidInputError, match="plan d8 ranks vectors; lexical search has none"):
            col.search("zeppelin", mode="lexical", plan="d8")
        with pytest.raises(InvalidInputError, match="got 2 query_vectors for 1 query texts"):
            col.search("zeppelin", mode="hybrid", query_vectors=vectors[:2])
        with pytest.raises(InvalidInputError, match="query_vectors are the dense half of a hybrid search"):
            col.search(vectors[0], mode="dense", query_vectors=vectors[:1])
        with pytest.raises(InvalidInputError, match=r"query 1 is empty: ' '"):
            col.search(["zeppelin", " "], mode="lexical")
        with pytest.raises(InvalidInputError, match=r"k=8 is out of range"):
            col.search("zeppelin", k=8, mode="lexical")
    with Collection.create(path.parent / "vectors-only", model=None, transform="none") as col:
        col.add(["a", "b"], vectors=vectors[:2])
        with pytest.raises(InvalidInputError, match="holds no text: lexical search has nothing to match"):
            col.search("zeppelin", k=1, mode="lexical")
        with pytest.raises(InvalidInputError, match="has no model"):
            col.search("zeppelin", k=1)  # no text: a text query is dense by default, which needs a model


def test_our_tokens_are_bm25s_tokens():
    texts = load_beir(BUNDLED / "cranfield").doc_texts + ["", "the of", "Ünïcode wörds, 3D x-ray's 42nd"]
    expected = bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False,
                              show_progress=False)
    assert lexical.tokenize(texts) == [[t for t in doc if t] for doc in expected]


@pytest.fixture(scope="module")
def cranfield(tmp_path_factory):
    folder = shared("cranfield")
    dataset = load_beir(BUNDLED / "cranfield")
    path = tmp_path_factory.mktemp("hybrid") / "cranfield"
    with Collection.create(path) as col:
        col.add(dataset.doc_ids, texts=dataset.doc_texts,
                vectors=np.load(folder / "corpus.minilm.f16.npy").astype(np.float32))
    return path, dataset, np.load(folder / "queries.minilm.f16.npy").astype(np.float32)


def test_hybrid_beats_dense_on_cranfield(cranfield):
    path, dataset, queries = cranfield
    with Collection.open(path) as col:
        dense = evaluate(col, dataset, query_vectors=queries)
        hybrid = evaluate(col, dataset, query_vectors=queries, mode="hybrid")
        lexical_only = evaluate(col, dataset, mode="lexical")
        batch = col.search(dataset.query_texts[:20], k=10, mode="hybrid", query_vectors=queries[:20])
        one = [col.search(dataset.query_texts[n], k=10, mode="hybrid", query_vectors=queries[n : n + 1]).ids[0]
               for n in range(20)]
    assert dense["ndcg@10"] == pytest.approx(0.3736, abs=1e-3)
    assert lexical_only["ndcg@10"] == pytest.approx(0.3650, abs=0.01)
    assert hybrid["ndcg@10"] >= 1.05 * dense["ndcg@10"], (hybrid, dense)
    assert hybrid["plan"] == "hybrid(d384 + bm25, rrf:k60:n100)" and hybrid["mode"] == "hybrid"
    same = np.mean([list(b) == list(o) for b, o in zip(batch.ids, one)])
    assert same >= 0.9, same  # a batch returns what one query at a time does (near-ties in dense may swap)


def test_hybrid_from_the_cli(cranfield):
    path, _, _ = cranfield
    runner = CliRunner()
    result = runner.invoke(app, ["search", str(path), "hypersonic heat transfer", "-k", "3", "--plan", "d64:200>d384",
                                 "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["mode"] == "hybrid" and out["plan"] == "hybrid(d64:200>d384 + bm25, rrf:k60:n100)"  # the default
    assert len(out["results"]) == 3 and len(out["cost"]["candidates"]) == 4
    result = runner.invoke(app, ["search", str(path), "hypersonic", "--mode", "lexical", "--fusion", "rrf"])
    assert result.exit_code == 1 and "fusion rrf applies to hybrid search only" in result.output
    result = runner.invoke(app, ["eval", str(path), "--beir", str(BUNDLED / "cranfield"), "--mode", "lexical",
                                 "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["ann_recall@10"] is None
