"""Ingest a document source into a collection a batch at a time: bounded memory, resumable.

Each batch is one `Collection.add`, so it is committed whole or not at all. Before adding,
the ids of a batch that the collection already holds are dropped (or, with `upsert`, replaced),
so running the same ingest again after a crash skips what was committed and adds the rest:
kill and re-run, and the collection ends up with every document once. Texts are embedded a
batch at a time, after the ids already there are dropped, so a resumed run embeds only what is
missing. The collection's transform is fitted on its first add, i.e. on the first batch (see
`Collection.add`; `Collection.elasticize` refits it on everything later).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from ..data.sources import Batch, Source
from ..errors import InvalidInputError
from .passages import PARENT

BATCH = 10_000  # rows read, embedded and committed at a time


@dataclass
class IngestReport:
    """What an ingest did: `rows` read from the source, `added` items written (chunks, when chunking;
    `replaced` of them were upserts of ids already there), `skipped` items already in the collection."""

    rows: int = 0
    added: int = 0
    replaced: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def ingest(col, source: Source, *, batch_size: int = BATCH, upsert: bool = False, vectors=None, chunker=None,
           progress: bool = False) -> IngestReport:
    """Add every document of `source` to the writable collection `col`, `batch_size` rows at a time.

    `vectors`: precomputed vectors in source order (an array, or a memory-mapped .npy), instead
    of the source's vector field or embedding the texts. `chunker`: splits each document's text into
    passages (see passages.py) stored as items ``<id>#<n>``. A bad row is an error naming it, raised
    before anything of its batch is written; the batches before it stay committed.
    """
    if vectors is not None and source.fields.vector is not None:
        raise InvalidInputError(f"vectors are given twice: as an array and as the source's field "
                                f"{source.fields.vector!r}")
    if chunker is not None and (vectors is not None or source.fields.vector is not None):
        raise InvalidInputError("chunking embeds each passage: precomputed vectors (one per document) cannot be "
                                "split with it")
    report, start = IngestReport(), time.perf_counter()
    total = source.rows if progress or vectors is not None else None
    if vectors is not None and len(vectors) != total:
        raise InvalidInputError(f"the vectors have {len(vectors)} rows, {source.path} has {total} documents")
    with tqdm(total=total, unit=" rows", desc=f"indexing {source.path.name}", disable=not progress,
              smoothing=0.05, dynamic_ncols=True) as bar:
        for batch in _batches(source, batch_size, report):
            if vectors is not None:
                batch.vectors = np.asarray(vectors[batch.start : batch.start + len(batch)], dtype=np.float32)
            if chunker is not None:
                batch = chunker.split(batch)
            _add(col, batch, upsert, report, chunked=chunker is not None)
            report.rows += batch.rows
            bar.update(batch.rows)
            bar.set_postfix(added=report.added, skipped=report.skipped, refresh=False)
    report.seconds = time.perf_counter() - start
    return report


def _batches(source: Source, batch_size: int, report: IngestReport):
    """The source's batches; an error names the batch and says what stays committed."""
    batches = source.batches(batch_size)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except InvalidInputError as exc:
            raise _resumable(exc, report) from None
        yield batch


def _add(col, batch: Batch, upsert: bool, report: IngestReport, chunked: bool) -> None:
    """Add the batch's items not yet in `col` (with `upsert`, all of them, replacing those there; passages
    replace their documents' passages whole, so a document upserted with fewer passages keeps no old ones)."""
    keep = np.arange(len(batch))
    there = set(col._docs.existing(batch.ids))
    if there and not upsert:
        keep = np.array([i for i, doc_id in enumerate(batch.ids) if doc_id not in there], dtype=np.int64)
        report.skipped += len(there)
    if not len(keep):
        return
    pick = (lambda values: [values[i] for i in keep]) if len(keep) < len(batch) else (lambda values: values)
    parents = list(dict.fromkeys(m[PARENT] for m in batch.metadata)) if chunked and upsert else None
    try:
        col.add(pick(batch.ids), texts=pick(batch.texts), metadata=pick(batch.metadata),
                vectors=None if batch.vectors is None else batch.vectors[keep], upsert=upsert, passages_of=parents)
    except InvalidInputError as exc:
        raise _resumable(InvalidInputError(f"{batch.where}: {exc}"), report) from None
    report.added += len(keep)
    report.replaced += len(there) if upsert else 0


def _resumable(exc: InvalidInputError, report: IngestReport) -> InvalidInputError:
    if not report.rows:
        return exc
    return InvalidInputError(f"{exc} (nothing of that batch was written; the {report.rows:,} rows before it are in "
                             "the collection, and running the same command again resumes after them)")
