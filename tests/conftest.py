import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

# the encoder's exported runtimes (encoder_cache.py) go to a folder of this session's, not the user's cache
_CACHE = os.environ.setdefault("MATSEARCH_CACHE", tempfile.mkdtemp(prefix="matsearch-test-cache-"))


def pytest_sessionfinish(session, exitstatus):
    if Path(_CACHE).name.startswith("matsearch-test-cache-"):
        shutil.rmtree(_CACHE, ignore_errors=True)


SHARED_DATA = Path(os.environ.get("MATSEARCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BUNDLED = Path(__file__).resolve().parents[1] / "data"
NESTING = [32, 64, 128, 256, 384]


def shared(name: str) -> Path:
    """A data set under ../shared/data (or $MATSEARCH_SHARED_DATA); a missing one fails the test, never skips it."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.fail(f"shared data folder {folder} is missing: provide it, or set MATSEARCH_SHARED_DATA to the "
                    f"folder that holds {name}/ (now {SHARED_DATA})", pytrace=False)
    return folder


def load_vectors(path: Path) -> np.ndarray:
    return np.load(path).astype(np.float32)


@pytest.fixture(scope="session")
def scifact():
    """SciFact: (doc ids, doc vectors, query vectors) — real MiniLM vectors."""
    folder = shared("scifact")
    ids = (folder / "corpus.ids.txt").read_text().split()
    return ids, load_vectors(folder / "corpus.minilm.f16.npy"), load_vectors(folder / "queries.minilm.f16.npy")


@pytest.fixture(scope="session")
def elastic_scifact(scifact, tmp_path_factory):
    """SciFact made elastic by PCA, in a store (never appended to by tests), and 200 elastic queries."""
    from matsearch import BlockStore
    from matsearch.transform import Transform

    _, docs, queries = scifact
    transform = Transform(kind="pca").fit(docs)
    store = BlockStore.create(tmp_path_factory.mktemp("elastic") / "vectors", NESTING)
    store.append(transform.apply(docs))
    return store, transform.apply(queries[:200])


@pytest.fixture
def synthetic():
    """Seeded clustered vectors with a Matryoshka-like decaying spectrum, plus queries."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(20, 64))
    docs = centres[rng.integers(0, 20, 600)] + 0.5 * rng.normal(size=(600, 64))
    docs *= np.linspace(2.0, 0.2, 64)
    queries = docs[rng.integers(0, 600, 25)] + 0.3 * rng.normal(size=(25, 64))
    return docs.astype(np.float32), queries.astype(np.float32)


def brute_force(docs: np.ndarray, queries: np.ndarray, k: int, dim: int, metric: str = "cosine"):
    """Reference top-k by numpy on the first `dim` dims (no matsearch code involved)."""
    x, q = docs[:, :dim].astype(np.float64), queries[:, :dim].astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ x.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def assert_same_ranking(ids, scores, ref_ids, ref_scores, *, rtol: float = 1e-5, atol: float = 1e-6):
    """Two top-k results (one row per query) rank the same items, ties compared as ties.

    Scores must match the reference's rank by rank within `rtol`/`atol`. Ids must match
    rank by rank, except within a run of ranks whose reference scores tie within the same
    tolerance: there the two must hold the same ids in any order (float rounding differs
    between kernels, so near-equal scores may swap). The last run may be cut at k: items
    in it that differ from the reference's must score, in this result, within tolerance
    of the reference's k-th score (another item tied with the k-th).
    """
    ids, ref_ids = np.atleast_2d(np.asarray(ids)), np.atleast_2d(np.asarray(ref_ids))
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    ref_scores = np.atleast_2d(np.asarray(ref_scores, dtype=np.float64))
    assert ids.shape == ref_ids.shape == scores.shape == ref_scores.shape, (
        f"shapes differ: ids {ids.shape}, scores {scores.shape}, reference ids {ref_ids.shape}, "
        f"reference scores {ref_scores.shape}")
    np.testing.assert_allclose(scores, ref_scores, rtol=rtol, atol=atol, err_msg="scores differ")
    for q, (got, want, got_scores, ref) in enumerate(zip(ids.tolist(), ref_ids.tolist(), scores, ref_scores)):
        assert len(set(got)) == len(got), f"query {q}: an id is returned twice: {got}"
        tol = atol + rtol * np.abs(ref)
        starts = np.flatnonzero(np.r_[True, np.abs(np.diff(ref)) > tol[:-1]])
        for lo, hi in zip(starts, np.r_[starts[1:], len(ref)]):
            extra, missing = set(got[lo:hi]) - set(want[lo:hi]), set(want[lo:hi]) - set(got[lo:hi])
            at_cut = hi == len(ref) and all(abs(got_scores[got.index(i)] - ref[-1]) <= tol[-1] for i in extra)
            if extra and not at_cut:  # at the cut, another item tied with the k-th may take the last places
                raise AssertionError(
                    f"query {q}: ranks {lo}..{hi - 1} (reference scores {ref[lo:hi].tolist()}) hold {sorted(extra)} "
                    f"instead of {sorted(missing)}\n  got:      {got}\n  expected: {want}")


def index_file(collection: Path, name: str) -> Path:
    """Where a collection keeps index file `name` now (each build writes a new folder, named in the manifest)."""
    import json

    return collection / json.loads((collection / "manifest.json").read_text())["indexes"] / name


@pytest.fixture(scope="session")
def calibrated_cranfield(tmp_path_factory) -> Path:
    """Cranfield's 1,400 abstracts as a collection: texts, MiniLM vectors, metadata (number, title), a small IVF and
    a calibration on noise pseudo-queries (about 3 s on 2 cores; text queries load the encoder). Built once per
    session: copy it (shutil.copytree) into a folder of your own before opening it."""
    import json

    from matsearch import Collection

    path = tmp_path_factory.mktemp("calibrated") / "cranfield"
    folder = shared("cranfield")
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    with Collection.create(path) as col:
        col.add([d["_id"] for d in docs], texts=[f"{d['title']} {d['text']}".strip() for d in docs],
                vectors=load_vectors(folder / "corpus.minilm.f16.npy"),
                metadata=[{"number": n, "title": d["title"]} for n, d in enumerate(docs)])
        col.build("ivf16@d64:d192/pq96x4fs")
        col.tune(sample=200, timed=5, pseudo="noise")
    return path
