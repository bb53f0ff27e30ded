import math

import numpy as np
import pytest

from conftest import BUNDLED, load_vectors, shared
from matsearch import Collection, InvalidInputError
from matsearch.data import load_beir, read_corpus_jsonl
from matsearch.eval import evaluate, ndcg_at_k, overlap_at_k, recall_at_k


def test_ndcg_uses_linear_gains_and_the_ideal_ranking():
    relevance = {"a": 2, "b": 1, "z": 0}
    assert ndcg_at_k(["a", "b", "c"], relevance, 10) == pytest.approx(1.0)
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(["b", "a"], relevance, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["c", "d", "a"], relevance, 2) == 0.0


def test_recall_counts_only_graded_documents():
    relevance = {"a": 1, "b": 3, "z": 0}
    assert recall_at_k(["a", "z", "c"], relevance, 3) == 0.5
    assert recall_at_k(["c", "a", "b"], relevance, 2) == 0.5


def test_overlap_is_ann_recall():
    assert overlap_at_k(["a", "b", "c"], ["c", "a", "x"], 3) == pytest.approx(2 / 3)


def test_beir_loader_reads_the_bundled_cranfield():
    data = load_beir(BUNDLED / "cranfield")
    assert len(data.doc_ids) == 1400 and len(data.qrels) == 225
    assert data.doc_texts[0].startswith("experimental investigation of the aerodynamics")
    assert data.doc_metadata[0]["title"].startswith("experimental investigation")


def test_corpus_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "1", "text": "ok"}\n{"title": "no id"}\n')
    with pytest.raises(InvalidInputError, match="line 2: each line needs an '_id'"):
        read_corpus_jsonl(path)
    path.write_text('{"_id": "1", "text": "ok"}\n{broken\n')
    with pytest.raises(InvalidInputError, match="line 2 is not valid JSON"):
        read_corpus_jsonl(path)
    with pytest.raises(InvalidInputError, match="is not a BEIR folder: corpus.jsonl is missing"):
        load_beir(tmp_path)


def test_scifact_full_dim_ndcg_matches_the_published_figure(tmp_path):
    folder = shared("scifact")
    data = load_beir(folder)
    with Collection.create(tmp_path / "c") as col:
        col.add(data.doc_ids, vectors=load_vectors(folder / "corpus.minilm.f16.npy"))
        metrics = evaluate(col, data, query_vectors=load_vectors(folder / "queries.minilm.f16.npy"))
        funnel = evaluate(col, data, plan="d64:200>d384", query_vectors=load_vectors(folder / "queries.minilm.f16.npy"))
    assert metrics["queries"] == 300
    assert metrics["ndcg@10"] == pytest.approx(0.645, abs=0.005)
    assert metrics["ann_recall@10"] == 1.0 and metrics["mean_cost"] == 5183 * 384
    assert funnel["ann_recall@10"] >= 0.95 and funnel["mean_cost"] < metrics["mean_cost"] / 4
    assert funnel["ndcg@10"] == pytest.approx(metrics["ndcg@10"], abs=0.01)


def test_query_vectors_must_match_the_queries_file(tmp_path):
    data = load_beir(BUNDLED / "cranfield")
    with Collection.create(tmp_path / "c", model=None) as col:
        col.add(data.doc_ids[:50], vectors=np.random.default_rng(0).normal(size=(50, 8)))
        with pytest.raises(InvalidInputError, match="query vectors have 3 rows, the queries file has 225"):
            evaluate(col, data, query_vectors=np.ones((3, 8)))


@pytest.mark.slow
def test_scifact_with_the_bundled_encoder_embedding_everything(tmp_path):
    """End to end with no precomputed vectors: ~7 minutes on 2 cores, so outside the CI run."""
    folder = shared("scifact")
    data = load_beir(folder)
    with Collection.create(tmp_path / "c") as col:
        col.add(data.doc_ids, texts=data.doc_texts)
        metrics = evaluate(col, data)
    assert metrics["ndcg@10"] == pytest.approx(0.645, abs=0.01)


def test_tiny_collections_are_evaluated_at_their_size(tmp_path):
    data = load_beir(BUNDLED / "cranfield")
    vectors = np.random.default_rng(0).normal(size=(len(data.query_ids), 8)).astype(np.float32)
    with Collection.create(tmp_path / "c", transform="none", model=None) as col:  # 8-dim vectors: no model
        col.add(data.doc_ids[:5], vectors=vectors[:5])
        metrics = evaluate(col, data, query_vectors=vectors)
    assert metrics["ann_recall@10"] == 1.0 and metrics["queries"] == 225


def test_queries_file_errors_name_the_line(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "ok"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "fine"}\n{"text": "no id"}\n')
    with pytest.raises(InvalidInputError, match="queries.jsonl line 2: each query needs '_id' and 'text'"):
        load_beir(tmp_path)
    (tmp_path / "queries.jsonl").write_text('[1, 2]\n')
    with pytest.raises(InvalidInputError, match="queries.jsonl line 1 is not a JSON object"):
        load_beir(tmp_path)
