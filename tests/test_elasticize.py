"""Re-fitting a collection's transform in place (`elasticize`), crash-safely, and the elasticity report."""

import functools
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import BUNDLED, brute_force, shared

import matsearch.collection.collection as collection_module
import matsearch.collection.refit as refit
import matsearch.train.adapter
from matsearch import Collection, CollectionError, InvalidInputError
from matsearch.data import load_beir
from matsearch.eval import ndcg_at_k
from matsearch.eval.elasticity import elasticity_report, plot_elasticity
from matsearch.train.adapter import fit_adapter


@pytest.fixture
def quick_adapter(monkeypatch):
    """These tests are about the plumbing: a 10-step adapter is enough."""
    monkeypatch.setattr(matsearch.train.adapter, "fit_adapter", functools.partial(fit_adapter, steps=10))


@pytest.fixture(scope="module")
def cranfield():
    folder = shared("cranfield")
    docs = np.load(folder / "corpus.minilm.f16.npy").astype(np.float32)
    queries = np.load(folder / "queries.minilm.f16.npy").astype(np.float32)
    return folder, docs, queries


def make(path, docs, recipe="ivf16@d64:d128"):
    col = Collection.create(path)
    col.add([f"d{i}" for i in range(len(docs))], vectors=docs)
    col.build(recipe)
    col.delete(["d3"])
    return col


LIVE = [0, 1, 2, 4, 5]  # some rows that stay (d3 is deleted)


def stored(col):
    return np.stack([r.vector for r in col.get([f"d{i}" for i in LIVE])])


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def overlap(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


def test_elasticize_rotates_the_store_onto_the_new_transform_and_rebuilds_the_indexes(tmp_path, cranfield,
                                                                                      quick_adapter):
    _, docs, queries = cranfield
    with make(tmp_path / "col", docs) as col:
        summary = col.elasticize("adapter", dims=[32, 16, 64])
        validation = summary.pop("validation")
        kind = "pca" if validation["fell_back"] else "adapter"
        assert summary == {"transform": kind, "dims": [16, 32, 64], "fitted_on": 1399, "pairs": 0,
                           "recipe": "ivf16@d64:d128"}
        matrix = col.transform.matrix_
        np.testing.assert_allclose(stored(col), unit(docs[LIVE]) @ matrix, atol=1e-5)
        col.add(["new"], vectors=docs[7:8])  # later documents go through the new transform
        np.testing.assert_allclose(col.get(["new"])[0].vector, unit(docs[7:8])[0] @ matrix, atol=1e-5)
        col.delete(["new"])
        found = col.search(queries[:20], k=10, plan="p16@d128:100>d384").ids  # every list probed
        truth, _ = brute_force(np.delete(docs, 3, axis=0), queries[:20], 10, 384)
    names = np.array([f"d{i}" for i in range(len(docs)) if i != 3])
    assert overlap(found, names[truth]) >= 0.99
    with Collection.open(tmp_path / "col") as col:
        assert col.manifest.transform == kind and len(col) == 1399
        np.testing.assert_array_equal(col.transform.matrix_, matrix)
        np.testing.assert_array_equal(col.search(queries[:20], k=10, plan="p16@d128:100>d384").ids, found)


def test_a_reader_follows_an_elasticize(tmp_path, cranfield):
    _, docs, queries = cranfield
    with make(tmp_path / "col", docs, recipe="flat") as writer, Collection.open(tmp_path / "col") as reader:
        old = reader.transform.matrix_.copy()
        writer.elasticize("pca", dims=[16])  # re-fitted without the deleted row: a slightly different rotation
        assert not np.array_equal(writer.transform.matrix_, old)
        np.testing.assert_array_equal(reader.transform.matrix_, writer.transform.matrix_)
        np.testing.assert_allclose(stored(reader), unit(docs[LIVE]) @ writer.transform.matrix_, atol=1e-5)
        assert overlap(reader.search(queries[:20], k=10).ids, writer.search(queries[:20], k=10).ids) == 1.0


def test_a_crash_after_the_commit_point_is_rolled_forward_on_the_next_writable_open(tmp_path, cranfield,
                                                                                 monkeypatch, quick_adapter):
    _, docs, queries = cranfield
    col = make(tmp_path / "col", docs)
    exact = col.search(queries[:10], k=10).ids
    monkeypatch.setattr(collection_module, "roll_forward", lambda path: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        col.elasticize("adapter")
    col.close()
    monkeypatch.undo()
    assert (tmp_path / "col" / refit.READY).is_dir()
    with pytest.raises(CollectionError, match="is being switched to a new transform"):
        Collection.open(tmp_path / "col")
    with Collection.open(tmp_path / "col", writable=True) as col:
        assert col.manifest.transform == "adapter" and not (tmp_path / "col" / refit.READY).exists()
        np.testing.assert_allclose(stored(col), unit(docs[LIVE]) @ col.transform.matrix_, atol=1e-5)
        assert overlap(col.search(queries[:10], k=10).ids, exact) >= 0.99  # a rotation: the same exact search
        assert overlap(col.search(queries[:10], k=10, plan="p16@d128:100>d384").ids, exact) >= 0.99


def test_a_crash_before_the_commit_point_leaves_the_old_collection(tmp_path, cranfield, monkeypatch):
    _, docs, queries = cranfield
    col = make(tmp_path / "col", docs)
    before, vectors = col.search(queries[:10], k=10, plan="d32:100>d384").ids, stored(col)
    monkeypatch.setattr(refit, "fsync_tree", lambda folder: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        col.elasticize("pca", dims=[16])
    col.close()
    assert (tmp_path / "col" / refit.STAGING).is_dir()
    with Collection.open(tmp_path / "col", writable=True) as col:
        assert not (tmp_path / "col" / refit.STAGING).exists()
        np.testing.assert_array_equal(stored(col), vectors)
        np.testing.assert_array_equal(col.search(queries[:10], k=10, plan="d32:100>d384").ids, before)


def test_supervised_elasticize_embeds_the_pairs_and_refuses_them_for_pca(tmp_path, cranfield, quick_adapter,
                                                                         monkeypatch):
    _, docs, _ = cranfield
    seen = {}

    def fake_encode(texts, progress=False):  # the pairs' texts, embedded: here, by looking up their vectors
        seen.setdefault("texts", []).extend(texts)
        return docs[[int(t.split()[-1]) for t in texts]]

    with make(tmp_path / "col", docs, recipe="flat") as col:
        monkeypatch.setattr(col.encoder, "encode", fake_encode)
        pairs = [(f"query about {i}", f"document {i + 1}") for i in range(0, 200, 2)]
        with pytest.raises(InvalidInputError, match="training pairs supervise the adapter only, not transform 'pca'"):
            col.elasticize("pca", pairs=pairs)
        seen.clear()
        summary = col.elasticize("adapter", pairs=pairs)
        assert summary["pairs"] == 100 and len(seen["texts"]) == 200
        with pytest.raises(InvalidInputError, match=r"pairs must be a non-empty list of \(query text"):
            col.elasticize("adapter", pairs=[("only a query",)])


def test_bad_elasticize_requests_are_named(tmp_path, cranfield):
    _, docs, _ = cranfield
    with make(tmp_path / "col", docs, recipe="flat") as col:
        with pytest.raises(InvalidInputError, match=r"elasticize method 'opq' is not one of \('pca', 'adapter'\)"):
            col.elasticize("opq")
        with pytest.raises(InvalidInputError, match="dim 512 is out of range"):
            col.elasticize("pca", dims=[16, 512])
    with Collection.open(tmp_path / "col") as reader:
        with pytest.raises(CollectionError, match="open read-only"):
            reader.elasticize("pca")


def test_the_report_scores_every_method_at_every_prefix(tmp_path, cranfield, quick_adapter):
    folder, docs, queries = cranfield
    dataset = load_beir(folder)
    with Collection.create(tmp_path / "col") as col:
        col.add(dataset.doc_ids, vectors=docs)
        report = elasticity_report(col, dataset, dims=[32, 16], query_vectors=queries)
    assert report["dims"] == [16, 32, 384] and report["queries"] == 225 and report["documents"] == 1400
    methods = report["methods"]
    assert set(methods) == {"truncation", "pca", "adapter"} and methods["pca"]["fitted"] == "collection's own"
    judged = [n for n, q in enumerate(dataset.query_ids) if q in dataset.qrels]
    top, _ = brute_force(docs, queries[judged], 10, 384)
    exact = np.mean([ndcg_at_k([dataset.doc_ids[i] for i in row], dataset.qrels[dataset.query_ids[n]], 10)
                     for row, n in zip(top, judged)])
    for scores in methods.values():  # every transform is a rotation: the full dim is exact search
        assert scores["recall@10"][-1] == pytest.approx(1.0)
        assert scores["ndcg@10"][-1] == pytest.approx(exact, abs=1e-3)
    assert methods["pca"]["recall@10"][0] > methods["truncation"]["recall@10"][0] + 0.15
    assert methods["pca"]["ndcg@10"][1] > methods["truncation"]["ndcg@10"][1] + 0.05
    plot_elasticity(report, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run(*args, ok=True):
    proc = subprocess.run([sys.executable, "-m", "matsearch", *map(str, args)], capture_output=True, text=True)
    assert (proc.returncode == 0) == ok, proc.stderr
    return proc


def test_cli_elasticize_then_report(tmp_path, cranfield):
    folder, _, _ = cranfield
    run("index", BUNDLED / "cranfield", "-c", tmp_path / "col", "--vectors", folder / "corpus.minilm.f16.npy",
        "--recipe", "hnsw16@d64", "--json")
    out = json.loads(run("elasticize", tmp_path / "col", "--method", "pca", "--dims", "16,32", "--json").stdout)
    assert out["transform"] == "pca" and out["dims"] == [16, 32] and out["recipe"] == "hnsw16@d64"
    proc = run("report", tmp_path / "col", "--beir", BUNDLED / "cranfield", "--query-vectors",
               folder / "queries.minilm.f16.npy", "--dims", "32", "--plot", tmp_path / "e.png", "--json")
    report = json.loads(proc.stdout)
    assert report["dims"] == [32, 384] and report["plot"] == str(tmp_path / "e.png") and (tmp_path / "e.png").exists()
    assert report["methods"]["adapter"]["fitted"] == "fitted for the report"
    assert report["methods"]["adapter"]["ndcg@10"][0] > report["methods"]["truncation"]["ndcg@10"][0]
    bad = run("elasticize", tmp_path / "col", "--dims", "16,x", ok=False)
    assert "--dims must be comma-separated integers such as 16,32,64, got '16,x'" in bad.stderr
    refused = run("elasticize", tmp_path / "col", "--pairs", BUNDLED / "cranfield", "--split", "test", ok=False)
    assert "refusing to train on split 'test': it is the evaluation split" in refused.stderr
