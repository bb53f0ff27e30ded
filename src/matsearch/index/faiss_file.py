"""Reading a faiss index file that a collection saved, with an error that names it."""

from __future__ import annotations

import faiss

from ..errors import CollectionError


def read_faiss_index(path, what: str, dim: int, store_count: int):
    """The faiss index saved at `path`; raise CollectionError if it is unreadable, not `dim`
    wide, or covers more rows than the store holds. `what` names it in the error."""
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise CollectionError(f"{what} file {path} is missing or corrupt: {str(exc).splitlines()[0]}") from None
    if index.d != dim or index.ntotal > store_count:
        raise CollectionError(f"{what} file {path} does not match its recipe or the stored vectors")
    return index
