"""Transforms that make a collection's vectors elastic, fitted and saved with it.

`pca` rotates vectors onto the principal axes of the collection (eigenvectors of
its covariance, largest variance first). The rotation is orthogonal and applied
without centring, so full-dim inner products and cosines are unchanged while
short prefixes keep as much of the spread as a linear map can. `adapter` starts
from that rotation and learns a better one (see `adapter`): prefixes that rank
neighbours as the full vectors do, full-dim cosines still unchanged. Unsupervised,
it is validated on held-back documents and shrunk toward PCA, or replaced by it,
where it does not generalise (see `train.validation`). `general` is a rotation shipped
with the package, fitted once on large unlabeled text for all-MiniLM-L6-v2 vectors (see
`general_rotation`): checked on held-back documents, it gives way to the collection's
own PCA where that serves them better; and PCA of fewer documents than dims takes the
axes they do not determine from it (`pca_rotation(fill=)`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from .errors import CollectionError, InvalidInputError
from .matryoshka import default_dims

TRANSFORMS = ("pca", "adapter", "general", "none")
FIT_SAMPLE = 200_000  # vectors a transform is fitted on at most
GENERAL_DIM = 384  # the general rotation is for all-MiniLM-L6-v2 vectors


class Transform:
    """Maps raw vectors into the stored (elastic) space: y = x @ matrix."""

    def __init__(self, *, kind: str):
        if kind not in TRANSFORMS:
            raise InvalidInputError(f"transform {kind!r} is not one of {TRANSFORMS}")
        self.kind = kind
        self.matrix_: np.ndarray | None = None
        self.validation_: dict | None = None  # the unsupervised adapter's held-back check

    @property
    def fitted_kind(self) -> str:
        """`pca` where the adapter or the general rotation fell back to it on validation, else the kind asked for."""
        return "pca" if self.validation_ and self.validation_["fell_back"] else self.kind

    def fit(self, vectors: np.ndarray, *, nesting: list[int] | None = None,
            pairs: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0, progress: bool = False) -> "Transform":
        """Learn the map from (a sample of up to 200,000 of) `vectors`; the adapter
        makes the prefixes at each dim of `nesting` good (default: powers of two from 16),
        supervised by (query, relevant document) vector `pairs` when given; unsupervised, it is
        validated on held-back vectors (`validation_`) and falls back to PCA where it loses.
        `general` is the shipped rotation, checked the same way against PCA fitted on the rest
        (see `train.validation.fit_validated_general`)."""
        dim = vectors.shape[1]
        if pairs is not None and self.kind != "adapter":
            raise InvalidInputError(f"training pairs supervise the adapter only, not transform {self.kind!r}")
        if self.kind == "none":
            self.matrix_ = None
            return self
        if len(vectors) > FIT_SAMPLE:
            rows = np.random.default_rng(seed).choice(len(vectors), FIT_SAMPLE, replace=False)
            vectors = vectors[np.sort(rows)]
        self.matrix_ = pca_rotation(vectors)
        if self.kind == "general":
            from .train.validation import fit_validated_general

            general = general_rotation(dim)
            self.matrix_, self.validation_ = fit_validated_general(vectors, general, nesting or default_dims(dim),
                                                                   seed=seed)
        elif self.kind == "adapter":
            from .train.adapter import fit_adapter  # torch loads only for training, not in a search process
            from .train.validation import fit_validated_adapter

            nesting = nesting or default_dims(dim)
            if pairs is None:
                self.matrix_, self.validation_ = fit_validated_adapter(vectors, self.matrix_, nesting, seed=seed,
                                                                       progress=progress)
            else:
                self.matrix_ = fit_adapter(vectors, self.matrix_, nesting, pairs=pairs, seed=seed, progress=progress)
        return self

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors in the stored space (a no-op for `none`)."""
        return vectors if self.matrix_ is None else vectors @ self.matrix_

    def restore(self, vectors: np.ndarray) -> np.ndarray:
        """The raw vectors that `apply` mapped to `vectors` (every transform here is orthogonal)."""
        return vectors if self.matrix_ is None else vectors @ self.matrix_.T

    def save(self, path: Path) -> None:
        if self.matrix_ is not None:
            np.save(path, self.matrix_)

    @classmethod
    def load(cls, path: Path, *, kind: str, dim: int) -> "Transform":
        transform = cls(kind=kind)
        if kind == "none":
            return transform
        try:
            matrix = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CollectionError(f"transform file {path} is missing or corrupt: {exc}") from None
        if matrix.shape != (dim, dim) or not np.isfinite(matrix).all():
            raise CollectionError(f"transform file {path} holds shape {matrix.shape}, expected ({dim}, {dim})")
        transform.matrix_ = matrix.astype(np.float32)
        return transform


def pca_rotation(vectors: np.ndarray, *, fill: np.ndarray | None = None) -> np.ndarray:
    """The (D, D) float32 rotation onto `vectors`' principal axes, largest variance first, each
    axis' sign fixed so the same data always gives the same matrix. With `fill` (orthogonal, (D, D)),
    axes the vectors do not determine (fewer than D + 1 of them) are `fill`'s columns in order, each
    made orthogonal to those before it, instead of an arbitrary basis of what is left."""
    centred = vectors.astype(np.float64) - vectors.mean(axis=0, dtype=np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    dim = len(eigenvectors)
    matrix = eigenvectors[:, ::-1]
    matrix *= np.where(matrix[np.abs(matrix).argmax(axis=0), np.arange(dim)] < 0, -1.0, 1.0)
    if fill is not None and len(vectors) <= dim:
        rank = int(np.sum(eigenvalues > 1e-9 * max(eigenvalues.max(), 1e-300)))
        matrix = _completed(matrix[:, :rank], fill.astype(np.float64))
    return np.ascontiguousarray(matrix, dtype=np.float32)


def _completed(axes: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """`axes` (orthonormal columns) then `fill`'s columns in order, each made orthogonal to all before it
    (Gram-Schmidt, twice); a column with less than 1e-4 of its length left outside them is skipped."""
    out = np.zeros((len(fill), len(fill)))
    out[:, : axes.shape[1]] = axes
    count = axes.shape[1]
    for column in fill.T:
        if count == len(fill):
            break
        for _ in range(2):
            column = column - out[:, :count] @ (out[:, :count].T @ column)
        length = np.linalg.norm(column)
        if length > 1e-4:
            out[:, count], count = column / length, count + 1
    return out


def general_rotation(dim: int = GENERAL_DIM) -> np.ndarray:
    """The shipped (384, 384) rotation for all-MiniLM-L6-v2 vectors (benchmarks/fit_general_rotation.py):
    principal axes of four unlabeled corpora refined by the adapter on them, stored as float16 and made
    exactly orthogonal again here."""
    if dim != GENERAL_DIM:
        raise InvalidInputError(f"the general rotation maps {GENERAL_DIM}-dim all-MiniLM-L6-v2 vectors, got "
                                f"{dim}-dim vectors; use transform 'pca' or 'adapter'")
    with resources.files("matsearch.data").joinpath("general_rotation.npy").open("rb") as f:
        stored = np.load(f, allow_pickle=False).astype(np.float64)
    left, _, right = np.linalg.svd(stored)  # the nearest orthogonal matrix to the float16 one
    return np.ascontiguousarray(left @ right, dtype=np.float32)
