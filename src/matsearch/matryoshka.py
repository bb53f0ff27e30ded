"""Matryoshka primitives: validate vectors and dims, truncate and re-normalise."""

from __future__ import annotations

import math

import numpy as np

from . import _kernels
from .errors import InvalidInputError


def check_vectors(vectors, dim: int | None = None, *, what: str = "vectors") -> np.ndarray:
    """Return `vectors` as a C-contiguous float32 matrix, or raise naming the bad value.

    Accepts one vector (1-D) or a batch (2-D). Rejects the wrong width, NaN/inf
    and all-zero rows, which have no direction to search with.
    """
    if type(vectors) is np.ndarray and vectors.ndim == 2 and vectors.shape[0] == 1 and \
            (dim is None or vectors.shape[1] == dim) and 0 < _kernels.squares(vectors) < math.inf:
        return vectors  # one float32 query, contiguous, finite and non-zero: the common case, checked in one call
    array = np.asarray(vectors)
    if array.dtype.kind not in "fiu":
        raise InvalidInputError(f"{what} must be numeric, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise InvalidInputError(f"{what} must be 1-D or 2-D, got shape {array.shape}")
    if array.shape[0] == 0:
        raise InvalidInputError(f"{what} is empty: no rows given")
    if dim is not None and array.shape[1] != dim:
        raise InvalidInputError(f"{what} have width {array.shape[1]}, expected {dim}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if len(array) == 1:  # one pass for the common case; the checks below name the fault
        square = float(np.dot(array[0], array[0]))
        if math.isfinite(square) and square > 0:
            return array
    else:
        squares = np.einsum("ij,ij->i", array, array)
        if np.isfinite(squares).all() and squares.all():
            return array
    finite = np.isfinite(array)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise InvalidInputError(f"{what}[{row}] has a non-finite value {array[row, col]} at dim {col}")
    zero = ~array.any(axis=1)
    if zero.any():
        raise InvalidInputError(f"{what}[{int(np.flatnonzero(zero)[0])}] has zero norm")
    return array


def check_dim(dim, full_dim: int) -> int:
    """Validate a prefix length against the vectors' full width."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise InvalidInputError(f"dim must be an integer, got {dim!r}")
    if not 1 <= dim <= full_dim:
        raise InvalidInputError(f"dim {dim} is out of range: vectors have {full_dim} dims (1..{full_dim})")
    return int(dim)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise each row (rows with zero norm stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def truncate(vectors, dim: int) -> np.ndarray:
    """First `dim` coordinates of each vector, re-normalised to unit length."""
    array = check_vectors(vectors)
    return normalize(array[:, : check_dim(dim, array.shape[1])])


def default_nesting(full_dim: int) -> list[int]:
    """Prefix lengths 32, 64, 128, … below `full_dim`, then `full_dim` itself.

    The first block is 32 wide, not 16: a BLAS scan costs about the same per row
    up to 32 float32 values, so a 16-wide block runs at half the bandwidth.
    """
    nesting, d = [], 32
    while d < full_dim:
        nesting.append(d)
        d *= 2
    return nesting + [full_dim]


def default_dims(full_dim: int) -> list[int]:
    """The prefixes an elastic transform is trained and reported for: 16, 32, 64, … below `full_dim`."""
    return [2**i for i in range(4, full_dim.bit_length()) if 2**i < full_dim]


def check_dims(dims, full_dim: int) -> list[int]:
    """Validate a list of prefix lengths; return them sorted, each once."""
    if isinstance(dims, (str, bytes)) or not hasattr(dims, "__iter__"):
        raise InvalidInputError(f"dims must be a list of integers, got {dims!r}")
    values = sorted({check_dim(d, full_dim) for d in dims})
    if not values:
        raise InvalidInputError("dims must name at least one prefix length")
    return values


def check_nesting(nesting, full_dim: int) -> list[int]:
    """Validate a nesting list: strictly increasing prefix lengths ending at `full_dim`."""
    values = [check_dim(d, full_dim) for d in nesting]
    if not values or values[-1] != full_dim or any(a >= b for a, b in zip(values, values[1:])):
        raise InvalidInputError(
            f"nesting {list(nesting)} must be strictly increasing and end at the full dim {full_dim}"
        )
    return values
