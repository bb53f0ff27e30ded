"""Ingest of a large source into a sharded collection: the shards write in parallel, Ray Data embeds the texts.

The driver reads the source a batch at a time (any format `open_source` reads, its fields mapped as for a
single collection), drops the ids the collection already holds (all of them kept with `upsert`), has the
texts of the rest embedded by Ray Data (`map_batches` over a pool of encoder actors; precomputed vectors pass
through) and starts each shard's part of the batch as an add on that shard's writer — then reads on while
the shards write, at most `IN_FLIGHT` batches behind. The first batch fits the shared transform (the sample
the transform is trained on, as for a single collection); each shard commits its part of a batch whole. A
run that fails — a bad row, a shard that died — leaves every batch before it committed, and running it
again skips what is there and adds the rest.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import ray
from tqdm.auto import tqdm

from ..collection.ingest import BATCH, IngestReport
from ..data.sources import Batch, Source
from ..encoder import Encoder
from ..errors import InvalidInputError
from ..matryoshka import check_vectors
from .pool import ShardUnavailableError

IN_FLIGHT = 2  # batches the shards may still be writing while the next one is read and embedded
_EMBED_BATCH = 256  # texts per call of an encoder actor


def ingest(col, source: Source, *, batch_size: int = BATCH, upsert: bool = False, vectors=None, encoders: int = 1,
           progress: bool = False) -> IngestReport:
    """Add every document of `source` to the writable sharded collection `col`; `vectors`: precomputed vectors
    in source order instead of embedding the texts; `encoders`: encoder actors Ray Data embeds with."""
    if vectors is not None and source.fields.vector is not None:
        raise InvalidInputError(f"vectors are given twice: as an array and as the source's field "
                                f"{source.fields.vector!r}")
    if vectors is not None and len(vectors) != source.rows:
        raise InvalidInputError(f"the vectors have {len(vectors)} rows, {source.path} has {source.rows} documents")
    report, start, writing = IngestReport(), time.perf_counter(), deque()
    with tqdm(total=source.rows if progress else None, unit=" rows", desc=f"indexing {source.path.name}",
              disable=not progress, smoothing=0.05, dynamic_ncols=True) as bar:
        try:
            for batch in source.batches(batch_size):
                if vectors is not None:
                    batch.vectors = np.asarray(vectors[batch.start : batch.start + len(batch)], dtype=np.float32)
                _start_batch(col, batch, upsert, report, writing, encoders)
                while len(writing) > IN_FLIGHT:
                    report.added += col.committed(writing.popleft())
                report.rows += batch.rows
                bar.update(batch.rows)
            while writing:
                report.added += col.committed(writing.popleft())
        except (InvalidInputError, ShardUnavailableError) as exc:
            committed = _drain(col, writing, report)
            where = "committed" if committed else "committed on the shards that answered"
            note = f"{exc} (the {report.rows:,} rows before it are {where}; running the same ingest again resumes)"
            if isinstance(exc, ShardUnavailableError):
                raise ShardUnavailableError(note, exc.shards) from None
            raise InvalidInputError(note) from None
    report.seconds = time.perf_counter() - start
    return report


def _drain(col, writing: deque, report: IngestReport) -> bool:
    """Wait for the adds still running, after a failure; whether every shard committed its part."""
    done = True
    while writing:
        try:
            report.added += col.committed(writing.popleft())
        except ShardUnavailableError:
            done = False
    return done


def _start_batch(col, batch: Batch, upsert: bool, report: IngestReport, writing: deque, encoders: int) -> None:
    """Start the adds of the batch's items not yet in `col` (all of them, with `upsert`)."""
    there = set(col.existing(batch.ids))
    keep = np.arange(len(batch)) if upsert or not there else \
        np.array([i for i, doc_id in enumerate(batch.ids) if doc_id not in there], dtype=np.int64)
    if not upsert:
        report.skipped += len(there)
    if not len(keep):
        return
    ids, texts = [batch.ids[i] for i in keep], [batch.texts[i] for i in keep]
    vectors = embed(texts, col.manifest.model, encoders) if batch.vectors is None else batch.vectors[keep]
    if col.dim is None:
        col.fit_transform(check_vectors(vectors))  # the first batch is the transform's sample
    try:
        vectors = check_vectors(vectors, col.dim)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{batch.where}: {exc}") from None
    writing.append(col.submit_add(ids, vectors, texts, [batch.metadata[i] for i in keep], upsert))
    report.replaced += len(there) if upsert else 0


class _Embed:
    """A Ray Data actor: the encoder, loaded once, applied to each batch of texts."""

    def __init__(self, model: str):
        self.encoder = Encoder(model=model)

    def __call__(self, batch: dict) -> dict:
        return {"at": batch["at"], "vector": self.encoder.encode([str(t) for t in batch["text"]])}


def embed(texts: list[str], model: str | None, encoders: int) -> np.ndarray:
    """The texts' vectors, embedded by `encoders` Ray Data actors running the collection's model."""
    if model is None:
        raise InvalidInputError("the collection has no model (created with model=None): give precomputed vectors")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the ingest's own bar says how far it is
    rows = ray.data.from_items([{"at": n, "text": t} for n, t in enumerate(texts)])
    done = rows.map_batches(_Embed, fn_constructor_kwargs={"model": model}, concurrency=encoders,
                            batch_size=_EMBED_BATCH).take_all()
    out = np.empty((len(texts), len(done[0]["vector"])), dtype=np.float32)
    for row in done:
        out[row["at"]] = row["vector"]
    return out
