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
import matsearch.transform
from matsearch import Collection, CollectionError, InvalidInputError
from matsearch.data import load_beir
from matsearch.eval.elasticity import elasticity_report, plot_elasticity
from matsearch.train.adapter import fit_adapter


@pytest.fixture
def quick_adapter(monkeypatch):
    """These tests are about the plumbing: a 10-step adapter is enough."""
    monkeypatch.setattr(matsearch.transform, "fit_adapter", functools.partial(fit_adapter, steps=10))


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


def stored(col, n):
    return np.stack([r.vector for r in col.get([f"d{i}" for i in range(n)])])


def test_elasticize_rotates_the_store_onto_the_new_transform_and_rebuilds_the_indexes(tmp_path, cranfield,
                                                                                      quick_adapter):
    _, docs, queries = cranfield
    with make(tmp_path / "col", docs) as col:
        summary = col.elasticize("adapter", dims=[32, 16, 64])
        assert summary == {"transform": "adapter", "dims": [16, 32, 64], "fitted_on": 1399, "pairs": 0,
                           "recipe": "ivf16@d64:d128"}
        matrix = col.transform.matrix_
        unit = docs / np.linalg.norm(docs, axis=1, keepdims=True)
        np.testing.assert_allclose(stored(col, 10), unit[:10] @ matrix, atol=1e-5)
        found = col.search(queries[:20], k=10, plan="p16@d128:100>d384").ids  # every list probed
        truth, _ = brute_force(np.delete(docs, 3, axis=0), queries[:20], 10, 384)
    names = np.array([f"d{i}" for i in range(len(docs)) if i != 3])
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, names[truth])]) >= 0.99
    with Collection.open(tmp_path / "col") as col:
        assert col.manifest.transform == "adapter" and len(col) == 1399
        np.testing.assert_array_equal(col.transform.matrix_, matrix)
        np.testing.assert_array_equal(col.search(queries[:20], k=10, plan="p16@d128:100>d384").ids, found)


def test_a_reader_follows_an_elasticize(tmp_path, cranfield):
    _, docs, queries = cranfield
    with make(tmp_path / "col", docs, recipe="flat") as writer, Collection.open(tmp_path / "col") as reader:
        before = reader.search(queries[:5], k=5, plan="d32:100>d384").ids
        writer.elasticize("pca", dims=[16])
        assert reader.manifest.transform == "pca"
        np.testing.assert_array_equal(reader.search(queries[:5], k=5, plan="d32:100>d384").ids, before)
        np.testing.assert_array_equal(reader.search(queries[:5], k=5).ids, writer.search(queries[:5], k=5).ids)


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
        np.testing.assert_allclose(stored(col, 5), docs[:5] / np.linalg.norm(docs[:5], axis=1, keepdims=True)
                                   @ col.transform.matrix_, atol=1e-5)
        np.testing.assert_array_equal(col.search(queries[:10], k=10).ids, exact)
        assert col.search(queries[:10], k=10, plan="p16@d128:100>d384").ids.shape == (10, 10)


def test_a_crash_before_the_commit_point_leaves_the_old_collection(tmp_path, cranfield, monkeypatch):
    _, docs, queries = cranfield
    col = make(tmp_path / "col", docs)
    before, vectors = col.search(queries[:10], k=10, plan="d32:100>d384").ids, stored(col, 5)
    monkeypatch.setattr(refit, "_fsync_tree", lambda folder: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        col.elasticize("pca", dims=[16])
    col.close()
    assert (tmp_path / "col" / refit.STAGING).is_dir()
    with Collection.open(tmp_path / "col", writable=True) as col:
        assert not (tmp_path / "col" / refit.STAGING).exists()
        np.testing.assert_array_equal(stored(col, 5), vectors)
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
    dataset = load_beir(BUNDLED / "cranfield")
    with Collection.create(tmp_path / "col") as col:
        col.add(dataset.doc_ids, vectors=docs)
        report = elasticity_report(col, dataset, dims=[32, 16], query_vectors=queries)
    assert report["dims"] == [16, 32, 384] and report["queries"] == 225 and report["documents"] == 1400
    methods = report["methods"]
    assert set(methods) == {"truncation", "pca", "adapter"} and methods["pca"]["fitted"] == "collection's own"
    for scores in methods.values():  # every transform is a rotation: the full dim is exact search
        assert scores["recall@10"][-1] == pytest.approx(1.0)
        assert scores["ndcg@10"][-1] == pytest.approx(0.3578, abs=5e-4)
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
