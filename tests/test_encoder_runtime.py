"""The encoder's ONNX runtimes: agreement with PyTorch, quality in int8, and the export cache."""

import os
import threading
import time

import numpy as np
import pytest
from conftest import shared

from matsearch import Encoder, InvalidInputError
from matsearch.data import load_beir
from matsearch.encoder import RUNTIME_ENV
from matsearch.encoder_cache import CACHE_ENV, STALE_SECONDS, cached_folder, damage
from matsearch.eval.metrics import ndcg_at_k


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    """A cache folder for the whole session, holding the bundled model exported in fp32 and int8."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("encoder-cache")
        patch.setenv(CACHE_ENV, str(cache))
        encoders = {runtime: Encoder(runtime=runtime) for runtime in ("onnx", "onnx-int8")}
        for encoder in encoders.values():
            encoder.encode(["export me"])
        yield cache, encoders


@pytest.fixture(scope="session")
def scifact_texts():
    return load_beir(shared("scifact"))


def test_fp32_onnx_agrees_with_pytorch_on_real_queries_and_documents(onnx_cache, scifact_texts):
    texts = scifact_texts.query_texts[:200] + scifact_texts.doc_texts[:50]  # most documents run past 256 tokens
    reference = Encoder(runtime="torch").encode(texts)
    vectors = onnx_cache[1]["onnx"].encode(texts)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert np.sum(vectors * reference, axis=1).min() >= 0.99
    one_by_one = np.vstack([onnx_cache[1]["onnx"].encode([t]) for t in texts[:20]])  # no padding
    assert np.sum(one_by_one * reference[:20], axis=1).min() >= 0.99


def test_int8_queries_keep_scifact_ndcg_within_0005_of_pytorch(onnx_cache, scifact_texts):
    """All 300 judged SciFact queries against the corpus as PyTorch encoded it (the shared vectors); the
    documents encoded in int8 are measured by benchmarks/bench_encoder.py, too slow for the suite."""
    dataset, folder = scifact_texts, shared("scifact")
    documents = np.load(folder / "corpus.minilm.f16.npy").astype(np.float32)
    pytorch_queries = np.load(folder / "queries.minilm.f16.npy").astype(np.float32)
    judged = [n for n, qid in enumerate(dataset.query_ids) if qid in dataset.qrels]
    int8_queries = onnx_cache[1]["onnx-int8"].encode([dataset.query_texts[n] for n in judged])

    def ndcg(queries):
        top = np.argsort(-(queries @ documents.T), axis=1)[:, :10]
        return np.mean([ndcg_at_k([dataset.doc_ids[d] for d in row], dataset.qrels[dataset.query_ids[n]], 10)
                        for n, row in zip(judged, top)])

    assert len(judged) == 300
    assert abs(ndcg(int8_queries) - ndcg(pytorch_queries[judged])) <= 0.005


def test_a_second_load_reuses_the_export(onnx_cache, monkeypatch):
    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("matsearch.encoder_onnx.export", no_export)
    again = Encoder(runtime="onnx-int8").encode(["reused"])
    np.testing.assert_allclose(again, onnx_cache[1]["onnx-int8"].encode(["reused"]), atol=1e-6)


def test_a_corrupt_export_is_rebuilt_and_named(onnx_cache, tmp_path, monkeypatch, caplog):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(onnx_cache[0], cache)
    monkeypatch.setenv(CACHE_ENV, str(cache))
    graph = next(cache.glob("onnx/*-fp32-*/model.onnx"))
    with graph.open("r+b") as f:
        f.seek(graph.stat().st_size // 2)
        f.write(b"\x00" * 64)
    vectors = Encoder(runtime="onnx").encode(["rebuilt"])
    assert f"{graph} does not match its checksum" in caplog.text
    assert damage(graph.parent) is None
    np.testing.assert_allclose(vectors, onnx_cache[1]["onnx"].encode(["rebuilt"]), atol=1e-5)


def test_cache_entries_are_whole_or_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    builds = []

    def build(folder):
        builds.append(folder)
        (folder / "weights.bin").write_bytes(b"w" * 1000)

    entry = cached_folder("kind", "key", build)
    assert cached_folder("kind", "key", build) == entry and len(builds) == 1
    (entry / "weights.bin").write_bytes(b"w" * 10)  # truncated
    assert damage(entry) == f"{entry / 'weights.bin'} has 10 bytes, not 1000"
    assert cached_folder("kind", "key", build) == entry and len(builds) == 2
    (entry / "manifest.json").unlink()
    cached_folder("kind", "key", build)
    assert len(builds) == 3 and (entry / "weights.bin").read_bytes() == b"w" * 1000
    assert [p.name for p in (tmp_path / "kind").iterdir()] == ["key"]  # no staging folder left behind
    dead, live = tmp_path / "kind" / ".key.dead", tmp_path / "kind" / ".key.building"
    dead.mkdir(), live.mkdir()
    os.utime(dead, (time.time() - 2 * STALE_SECONDS,) * 2)  # a build killed long ago; another one under way
    (entry / "manifest.json").unlink()
    cached_folder("kind", "key", build)
    assert not dead.exists() and live.exists()


def test_concurrent_builders_all_get_a_whole_entry(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    start, entries = threading.Barrier(4), []

    def build(folder):
        (folder / "weights.bin").write_bytes(b"w" * 100_000)

    def use():
        start.wait()
        entries.append(cached_folder("kind", "key", build))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(entries) == 4 and all(damage(entry) is None for entry in entries)
    assert [p.name for p in (tmp_path / "kind").iterdir()] == ["key"]


def test_bad_runtime_names_are_refused(monkeypatch):
    with pytest.raises(InvalidInputError, match=r"encoder runtime 'onnx-int4' is not one of \('onnx-int8', 'onnx', "
                                                r"'torch'\)"):
        Encoder(runtime="onnx-int4")
    monkeypatch.setenv(RUNTIME_ENV, "gpu")
    with pytest.raises(InvalidInputError, match="MATSEARCH_ENCODER_RUNTIME='gpu' is not one of"):
        Encoder()
    monkeypatch.setenv(RUNTIME_ENV, "torch")
    assert Encoder().runtime == "torch"


def test_an_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    with pytest.raises(Exception, match=f"cannot write the cache folder {blocker}/onnx"):
        Encoder(runtime="onnx").encode(["x"])
