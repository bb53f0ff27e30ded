"""The adapter checked on held-back documents: shrunk toward PCA, or PCA kept, and said so."""

import functools

import numpy as np
import pytest
import scipy.linalg
from conftest import shared

import matsearch.train.adapter
from matsearch import Collection, InvalidInputError
from matsearch.train.adapter import fit_adapter
from matsearch.train.validation import STRENGTHS, fit_validated_adapter, held_back_split, shrink
from matsearch.transform import Transform

DIMS = [16, 32, 64]


@pytest.fixture(scope="module")
def docs():
    return np.load(shared("cranfield") / "corpus.minilm.f16.npy").astype(np.float32)


@pytest.fixture(scope="module")
def pca(docs):
    return Transform(kind="pca").fit(docs).matrix_


def random_rotation(dim, seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))[0].astype(np.float32)


def test_held_back_documents_are_a_share_of_at_least_256_and_never_seen_by_the_fit():
    for count, held in ((1400, 256), (5183, 777), (100_000, 2000), (600, 150)):
        fit, back = held_back_split(count, seed=0)
        assert len(back) == held and len(fit) + len(back) == count and not np.intersect1d(fit, back).size
    np.testing.assert_array_equal(held_back_split(5183, 3)[1], held_back_split(5183, 3)[1])


def test_too_few_vectors_to_hold_some_back_are_named(docs, pca):
    with pytest.raises(InvalidInputError, match=r"needs at least 136 vectors \(a quarter may be held back"):
        fit_validated_adapter(docs[:100], pca, DIMS)


def test_shrinking_walks_from_pca_to_the_learned_rotation(pca):
    noise = 0.01 * np.random.default_rng(2).standard_normal((384, 384))
    nudge = scipy.linalg.expm(noise - noise.T)  # a rotation near the identity, as the adapter learns
    learned = (pca @ nudge).astype(np.float32)
    np.testing.assert_allclose(shrink(pca, learned, 0.0), pca, atol=1e-5)
    np.testing.assert_allclose(shrink(pca, learned, 1.0), learned, atol=1e-4)
    half = shrink(pca, learned, 0.5)
    np.testing.assert_allclose(half @ half.T, np.eye(384), atol=1e-5)
    assert np.linalg.norm(half - pca) == pytest.approx(np.linalg.norm(learned - pca) / 2, rel=0.01)


def test_an_adapter_that_hurts_falls_back_to_pca_and_says_so(docs, pca, monkeypatch):
    monkeypatch.setattr(matsearch.train.adapter, "fit_adapter", lambda *a, **k: random_rotation(384, 0))
    matrix, report = fit_validated_adapter(docs, pca, DIMS)
    np.testing.assert_array_equal(matrix, pca)
    assert report["fell_back"] and report["strength"] == 0.0 and report["improved"] == {}
    assert report["kept"] == report["pca"] and all(a < p for a, p in zip(report["adapter"], report["pca"]))


def test_an_untrained_adapter_is_no_better_than_pca_so_pca_is_kept(docs, pca, monkeypatch):
    monkeypatch.setattr(matsearch.train.adapter, "fit_adapter", functools.partial(fit_adapter, steps=0))
    matrix, report = fit_validated_adapter(docs, pca, DIMS)
    np.testing.assert_array_equal(matrix, pca)
    assert report["fell_back"] and report["adapter"] == report["pca"]


def test_the_report_names_every_dim_and_the_same_seed_gives_the_same_result(docs, monkeypatch):
    monkeypatch.setattr(matsearch.train.adapter, "fit_adapter", functools.partial(fit_adapter, steps=15))
    first = Transform(kind="adapter").fit(docs[:600], nesting=DIMS, seed=4)
    report = first.validation_
    assert report["held_back"] == 150 and report["dims"] == DIMS and report["criterion"].startswith("recall@10")
    for key in ("pca", "adapter", "kept"):
        assert len(report[key]) == len(DIMS) and all(0 <= r <= 1 for r in report[key])
    assert set(report["improved"]) <= set(DIMS) and report["strength"] in (0.0, *STRENGTHS)
    assert first.fitted_kind == ("pca" if report["fell_back"] else "adapter")
    again = Transform(kind="adapter").fit(docs[:600], nesting=DIMS, seed=4)
    np.testing.assert_array_equal(first.matrix_, again.matrix_)
    assert again.validation_ == report


def test_elasticize_reports_a_fallback_and_stores_pca(tmp_path, docs, pca, monkeypatch):
    monkeypatch.setattr(matsearch.train.adapter, "fit_adapter", functools.partial(fit_adapter, steps=0))
    with Collection.create(tmp_path / "col") as col:
        col.add([f"d{i}" for i in range(len(docs))], vectors=docs)
        summary = col.elasticize("adapter", dims=DIMS)
        assert summary["transform"] == "pca" and summary["validation"]["fell_back"]
        assert summary["validation"]["dims"] == DIMS
        same_axes = np.sum(col.transform.matrix_[:, :64] * pca[:, :64], axis=0)  # PCA of the stored vectors
        assert same_axes.min() > 0.999
    with Collection.open(tmp_path / "col") as col:
        assert col.manifest.transform == "pca"


def test_the_cli_prints_the_validation_per_dim_and_the_fallback(capsys):
    from matsearch.cli import _print_validation

    report = {"criterion": "recall@10 of held-back documents' full-dim neighbours", "held_back": 256,
              "dims": [16, 32], "pca": [0.5, 0.6], "adapter": [0.45, 0.58], "kept": [0.5, 0.6], "strength": 0.0,
              "improved": {}, "fell_back": True}
    _print_validation(report)
    _print_validation({**report, "kept": [0.53, 0.6], "strength": 0.5, "improved": {16: 0.03}, "fell_back": False})
    printed = " ".join(capsys.readouterr().out.split())
    assert "16 0.500 0.450 0.500 (+0.0)" in printed and "the transform stays PCA" in printed
    assert "kept the adapter at strength 0.5" in printed and "improved dims 16 (+3.0)" in printed
