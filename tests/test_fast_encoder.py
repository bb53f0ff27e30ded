"""The fast query encoder (encoder_student.py): the student shares the full model's space, its int8 ONNX graph
agrees with PyTorch, and `encoder=` selects it through Collection.search and the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import shared

from matsearch import Collection, Encoder, InvalidInputError, encoder_student
from matsearch.encoder import DEFAULT_MODEL, resolve_model

# Measured with the shipped parts: recall@10 of 200 pkgsum query summaries (never trained on) encoded by the int8
# student, against the full model's top-10 among 2,000 corpus vectors: 0.67 (the int8 full model: 0.91); the int8
# student's cosine to the PyTorch student over those texts: min 0.993, mean 0.996. Bars leave room for other CPUs.
RECALL_BAR = 0.60
INT8_MIN_COSINE, INT8_MEAN_COSINE = 0.98, 0.99


@pytest.fixture(scope="module")
def pkgsum():
    """200 held-back query summaries (never trained on) with the teacher's vectors, and 2,000 corpus vectors."""
    folder = shared("pkgsum")
    texts = [line.rstrip("\n").split("\t", 1)[1] for line in open(folder / "queries.tsv")][:200]
    queries = np.load(folder / "queries.minilm.f16.npy")[:200].astype(np.float32)
    corpus = np.load(folder / "corpus.minilm.f16.npy")[:2000].astype(np.float32)
    return texts, queries, corpus


@pytest.fixture(scope="module")
def fast_int8():
    return Encoder(runtime="onnx-int8", variant="fast", threads=1)


def top10(queries, corpus):
    return np.argsort(-(queries @ corpus.T), axis=1)[:, :10]


def test_student_queries_find_the_teachers_neighbours(pkgsum, fast_int8):
    texts, teacher, corpus = pkgsum
    found, truth = top10(fast_int8.encode(texts), corpus), top10(teacher, corpus)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= RECALL_BAR


def test_int8_student_agrees_with_pytorch_student(pkgsum, fast_int8):
    texts = pkgsum[0]
    cosine = np.sum(fast_int8.encode(texts) * Encoder(runtime="torch", variant="fast").encode(texts), axis=1)
    assert cosine.min() >= INT8_MIN_COSINE and cosine.mean() >= INT8_MEAN_COSINE


def test_cache_key_follows_the_shipped_parts(tmp_path):
    parts = encoder_student.load_parts(encoder_student.parts_path())
    parts["map.bias"][0] += 0.5
    changed = tmp_path / "parts.npz"
    np.savez(changed, **{k: v.astype(np.float16) for k, v in parts.items()})
    model = resolve_model(DEFAULT_MODEL)
    assert encoder_student.student_folder(model) != encoder_student.student_folder(model, changed)
    assert encoder_student.student_folder(model) == encoder_student.student_folder(model)


@pytest.fixture(scope="module")
def cranfield(tmp_path_factory):
    folder = shared("cranfield")
    path = tmp_path_factory.mktemp("fast") / "col"
    col = Collection.create(path, transform="none")
    col.add((folder / "corpus.ids.txt").read_text().split(), vectors=np.load(folder / "corpus.minilm.f16.npy"))
    col.close()
    return path


def test_search_selects_the_sub_model(cranfield, fast_int8):
    query = "what are the structural and aeroelastic problems associated with flight of high speed aircraft"
    with Collection.open(cranfield) as col:
        col.encoder = Encoder(runtime="onnx-int8", threads=1)
        fast = col.search(query, k=10, mode="dense", encoder="fast")
        full = col.search(query, k=10, mode="dense")
        assert (fast.encoder, full.encoder) == ("fast", "full")
        expected = col.search(fast_int8.encode([query]), k=10, mode="dense")
        assert list(fast.ids[0]) == list(expected.ids[0])
        vectors = col.search(fast_int8.encode([query]), k=10, encoder="fast")  # vectors: no encoder to choose
        assert list(vectors.ids[0]) == list(expected.ids[0]) and vectors.encoder == "full"
        with pytest.raises(InvalidInputError, match="encoder 'quick' is not one of"):
            col.search(query, encoder="quick")
        with pytest.raises(InvalidInputError, match="encoder 'quick' is not one of"):
            col.search(fast_int8.encode([query]), encoder="quick")


def test_fast_needs_the_default_model():
    with pytest.raises(InvalidInputError, match="encoder 'fast' needs trained student parts.*'some/other-model'"):
        Encoder(model="some/other-model", variant="fast")


def test_cli_search_with_the_fast_encoder(cranfield):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "matsearch", "search", cranfield, "flutter of wings", *args],
                              capture_output=True, text=True)

    proc = run("--encoder", "fast", "--mode", "dense", "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["encoder"] == "fast" and len(answer["results"]) == 10
    proc = run("--encoder", "quick")
    assert proc.returncode == 1 and "encoder 'quick' is not one of" in proc.stderr
