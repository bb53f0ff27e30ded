"""An adapter that generalises: fitted on most of a collection, checked on the rest.

A share of the documents is held back from fitting. Each held-back document is a
pseudo-query whose full-dim nearest neighbours (among all documents) the prefixes
should find; recall@10 at each prefix dim is the criterion the adapter trains for,
measured on documents it never saw. The learned rotation PCA · exp(G) is then
shrunk toward its PCA start (PCA · exp(s·G) for a few strengths s ≤ 1) and the
strongest-scoring one kept, provided it falls below PCA by no more than a small
margin at any dim; when none does, the transform falls back to PCA.

The shipped general rotation is checked the same way, against PCA fitted on all but
the held-back documents: it is kept only where it serves them as well as the
collection's own PCA. Below 136 documents nothing can be held back: the collection's
own principal axes (as many as its documents determine) are kept, and the general
rotation fills in the rest.
"""

from __future__ import annotations

import faiss
import numpy as np
import scipy.linalg

from ..errors import InvalidInputError
from ..matryoshka import normalize
from ..transform import pca_rotation
from . import adapter, neighbours

HELD_BACK_SHARE = 0.15  # of the documents, kept from fitting to validate on
HELD_BACK_MIN = 256
HELD_BACK_MAX = 2_000
STRENGTHS = (1.0, 0.75, 0.5, 0.25)  # how far along the learned rotation from PCA each candidate goes
# Recall a candidate may lose to PCA at any dim and still be kept: losses of up to 2.4 points on
# held-back documents came with nDCG@10 within 0.3 points of PCA's on four collections.
MARGIN = 0.03
_K = 10


MIN_VECTORS = 4 * (neighbours.NEIGHBOURS + 2)  # a quarter may be held back, and each must have neighbours


def fit_validated_general(vectors: np.ndarray, general: np.ndarray, nesting: list[int], *,
                          seed: int = 0) -> tuple[np.ndarray, dict | None]:
    """`general`, or the collection's own PCA (of all `vectors`, completed by `general` where they are
    fewer than the dims) where PCA fitted on all but the held-back documents finds their full-dim
    neighbours better (same margin and criterion as the adapter's), and the report. With fewer
    than 136 vectors nothing is held back: own PCA completed by `general`, and no report."""
    pca = pca_rotation(vectors, fill=general)
    if len(vectors) < MIN_VECTORS:
        return pca, None
    fit_rows, held_rows = held_back_split(len(vectors), seed)
    dims = [d for d in nesting if d < vectors.shape[1]]
    unit = normalize(np.asarray(vectors, dtype=np.float32))
    truth = _top(unit, held_rows)
    baseline = prefix_recall(unit @ pca_rotation(vectors[fit_rows], fill=general), held_rows, truth, dims)
    scores = prefix_recall(unit @ general, held_rows, truth, dims)
    strength, _, kept = _choose([(1.0, general, scores)], baseline)
    report = {"criterion": f"recall@{_K} of held-back documents' full-dim neighbours", "held_back": len(held_rows),
              "dims": dims, "pca": baseline, "general": scores, "kept": kept,
              "improved": {d: round(g - p, 4) for d, g, p in zip(dims, scores, baseline) if g > p},
              "fell_back": strength == 0.0}
    return (pca if strength == 0.0 else general), report


def fit_validated_adapter(vectors: np.ndarray, pca: np.ndarray, nesting: list[int], *, seed: int = 0,
                          progress: bool = False) -> tuple[np.ndarray, dict]:
    """The adapter fitted on all but the held-back documents, shrunk toward `pca` or replaced
    by it as validation on the held-back ones says, and the validation report."""
    if len(vectors) < MIN_VECTORS:
        raise InvalidInputError(f"the adapter needs at least {MIN_VECTORS} vectors "
                                f"(a quarter may be held back to validate it), got {len(vectors)}")
    fit_rows, held_rows = held_back_split(len(vectors), seed)
    learned = adapter.fit_adapter(vectors[fit_rows], pca, nesting, seed=seed, progress=progress)
    dims = [d for d in nesting if d < vectors.shape[1]]
    unit = normalize(np.asarray(vectors, dtype=np.float32))
    truth = _top(unit, held_rows)
    baseline = prefix_recall(unit @ pca, held_rows, truth, dims)
    candidates = [(s, shrink(pca, learned, s)) for s in STRENGTHS]
    scored = [(s, matrix, prefix_recall(unit @ matrix, held_rows, truth, dims)) for s, matrix in candidates]
    strength, matrix, kept = _choose(scored, baseline)
    report = {"criterion": f"recall@{_K} of held-back documents' full-dim neighbours", "held_back": len(held_rows),
              "dims": dims, "pca": baseline, "adapter": scored[0][2], "strength": strength, "kept": kept,
              "improved": {d: round(a - p, 4) for d, a, p in zip(dims, kept, baseline) if a > p},
              "fell_back": strength == 0.0}
    return (pca if strength == 0.0 else matrix), report


def held_back_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows to fit on and rows held back: 15% of `count`, at least 256 and at most 2,000,
    and never more than a quarter of the rows."""
    held = min(max(round(HELD_BACK_SHARE * count), HELD_BACK_MIN), HELD_BACK_MAX, count // 4)
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


def shrink(pca: np.ndarray, learned: np.ndarray, strength: float) -> np.ndarray:
    """The rotation `strength` of the way from `pca` to `learned` along the geodesic between them."""
    generator = np.real(scipy.linalg.logm(pca.T.astype(np.float64) @ learned.astype(np.float64)))
    generator = (generator - generator.T) / 2  # exactly skew, so the result is exactly a rotation
    return (pca.astype(np.float64) @ scipy.linalg.expm(strength * generator)).astype(np.float32)


def prefix_recall(rotated: np.ndarray, held_rows: np.ndarray, truth: np.ndarray, dims: list[int]) -> list[float]:
    """For each prefix dim, the share of each held-back row's full-dim top 10 that exact search
    on the re-normalised prefix finds (the row itself left out)."""
    out = []
    for d in dims:
        found = _top(normalize(rotated[:, :d]), held_rows)
        out.append(round(float(np.mean([len(np.intersect1d(f, t)) for f, t in zip(found, truth)]) / _K), 4))
    return out


def _choose(scored, baseline) -> tuple[float, np.ndarray | None, list[float]]:
    """The candidate with the best mean recall among those within the margin of PCA at every dim,
    if it beats PCA on average; else (0.0, None, PCA's figures)."""
    allowed = [c for c in scored if all(a >= p - MARGIN for a, p in zip(c[2], baseline))]
    best = max(allowed, key=lambda c: (np.mean(c[2]), c[0]), default=None)
    if best is None or np.mean(best[2]) <= np.mean(baseline):
        return 0.0, None, baseline
    return best


def _top(items: np.ndarray, held_rows: np.ndarray) -> np.ndarray:
    """Each held-back row's 10 nearest rows by inner product, itself left out."""
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    found = index.search(np.ascontiguousarray(items[held_rows], dtype=np.float32), _K + 1)[1]
    return np.array([[j for j in row if j != i][:_K] for i, row in zip(held_rows, found)], dtype=np.int64)
