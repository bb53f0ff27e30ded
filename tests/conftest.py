import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("MATSEARCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BUNDLED = Path(__file__).resolve().parents[1] / "data"


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
