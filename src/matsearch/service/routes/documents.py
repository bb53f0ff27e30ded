"""/v1/collections/{name}/documents and /delete: add or upsert in batches, read by id, delete by id."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, HTTPException, Request

from ...errors import InvalidInputError
from ..deps import ERRORS, READ, WRITE, CollectionName, Collections, Config
from ..errors import NotFound
from ..schemas import AddDocuments, Added, Deleted, Ids, StoredDocument

router = APIRouter(prefix="/v1/collections", tags=["documents"], responses=ERRORS)
WRITE_THREADS = 4  # writes run on threads of their own: however many wait (on each other, or on a long job),
# they hold at most these, never the thread pool the searches run on


async def _on_write_threads(request: Request, work):
    if not hasattr(request.app.state, "write_threads"):  # made inside the event loop, as anyio needs
        request.app.state.write_threads = CapacityLimiter(WRITE_THREADS)
    return await to_thread.run_sync(work, limiter=request.app.state.write_threads)


@router.post("/{name}/documents", response_model=Added, dependencies=WRITE)
async def add_documents(request: Request, name: CollectionName, body: AddDocuments, collections: Collections,
                        settings: Config) -> dict:
    """Add (or with `upsert`, replace) documents: each with a vector, or each with a text to embed. All or none
    are written, and the answer comes after they are committed."""
    return await _on_write_threads(request, partial(_add, name, body, collections, settings))


def _add(name: str, body: AddDocuments, collections, settings) -> dict:
    docs = body.documents
    if len(docs) > settings.max_batch:
        raise HTTPException(413, f"a batch of {len(docs)} documents is over this service's limit of "
                                 f"{settings.max_batch}; send smaller batches")
    with_vector = [d.vector is not None for d in docs]
    if any(with_vector) and not all(with_vector):
        raise InvalidInputError(f"documents[{with_vector.index(not with_vector[0])}] "
                                f"{'has no' if with_vector[0] else 'has a'} vector but documents[0] "
                                f"{'has' if with_vector[0] else 'has not'}: give every document a vector, or none "
                                "(their texts are then embedded)")
    vectors = query_matrix([d.vector for d in docs], "documents[{}].vector") if with_vector[0] else None
    if vectors is None and any(d.text is None for d in docs):
        first = next(n for n, d in enumerate(docs) if d.text is None)
        raise InvalidInputError(f"documents[{first}] has neither a vector nor a text to embed")
    texts = [d.text for d in docs] if any(d.text is not None for d in docs) else None
    with collections.writing(name) as col:
        added = col.add([d.id for d in docs], texts=texts, vectors=vectors, metadata=[d.metadata for d in docs],
                        upsert=body.upsert)
    return {"added": added}


@router.get("/{name}/documents/{doc_id:path}", response_model=StoredDocument, dependencies=READ)
def get_document(name: CollectionName, doc_id: str, collections: Collections) -> dict:
    """A stored document's text and metadata."""
    with collections.reading(name) as col, absent_ids_are_404(name):
        record = col.get([doc_id])[0]
    return {"id": record.id, "text": record.text, "metadata": record.metadata}


@router.post("/{name}/delete", response_model=Deleted, dependencies=WRITE)
async def delete_documents(request: Request, name: CollectionName, body: Ids, collections: Collections) -> dict:
    """Delete documents by id, all or none (an id not there is a 404 and nothing is deleted)."""
    return await _on_write_threads(request, partial(_delete, name, body.ids, collections))


def _delete(name: str, ids: list[str], collections) -> dict:
    with collections.writing(name) as col, absent_ids_are_404(name):
        return {"deleted": col.delete(ids)}


@contextmanager
def absent_ids_are_404(name: str):
    """The library's error for ids a collection does not hold, as a 404."""
    try:
        yield
    except InvalidInputError as exc:
        if str(exc).startswith("ids not in the collection"):
            raise NotFound(f"{exc} (collection {name!r})") from None
        raise


def query_matrix(vectors: list[list[float]], where: str) -> np.ndarray:
    """Vectors as a float32 matrix; a ragged batch, or a vector with no direction in float32, is an error naming
    it (`where` formats its position)."""
    width = len(vectors[0])
    ragged = next((n for n, v in enumerate(vectors) if len(v) != width), None)
    if ragged is not None:
        raise InvalidInputError(f"{where.format(ragged)} has {len(vectors[ragged])} values but "
                                f"{where.format(0)} has {width}")
    matrix = np.array(vectors, dtype=np.float32)
    squares = np.einsum("ij,ij->i", matrix, matrix)
    bad = np.flatnonzero(~(np.isfinite(squares) & (squares >= np.finfo(np.float32).tiny)))
    if len(bad):
        raise InvalidInputError(f"{where.format(int(bad[0]))} has no direction to search with: its squared norm "
                                f"in float32 is {squares[bad[0]]}")
    return matrix
