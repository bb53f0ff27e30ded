import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("MATSEARCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BUNDLED = Path(__file__).resolve().parents[1] / "data"
NESTING = [32, 64, 128, 256, 384]


def shared(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"shared data {folder} is not available")
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
