"""Ingest of a large source into a sharded collection: Ray tasks read it in parts, the shards write in parallel,
Ray Data embeds the texts.

A large jsonl or parquet source is read in parts (parts.py: jsonl by byte ranges cut at line starts, parquet by
row groups), each parsed by a streaming Ray task that passes its rows' precomputed vectors along with them; a
small one, or one that cannot be cut (compressed, csv/tsv), is read by the driver a batch at a time. Either way
the driver takes the batches in source order, drops the ids the collection already holds (all of them kept with
`upsert`), has the texts of the rest embedded by Ray Data (`map_batches` over a pool of encoder actors) and
starts each shard's part of the batch — its ids hashed as the collection routes them — as an add on that shard's
writer, then reads and embeds the next batch while the shards write, and starts its adds once the batch before
has committed (so that a shard adds the batches in source order: a later row of an id wins). The first batch
fits the shared transform (the sample the transform is trained on, as for a single collection); each shard
commits its part of a batch whole. A run that fails — a bad row, a shard that died — leaves every batch before
it committed, and running it again skips what is there (the ids already held) and adds the rest.
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
from . import parts as _parts
from .pool import ShardUnavailableError

PART_BYTES = 64 << 20  # a jsonl source is read in parts of about this size (parquet: the same in rows, below)
PART_ROWS = 200_000  # rows of a parquet source per part
_EMBED_BATCH = 256  # texts per call of an encoder actor


def ingest(col, source: Source, *, batch_size: int = BATCH, upsert: bool = False, vectors=None, encoders: int = 1,
           parts: int | None = None, readers: int | None = None, progress: bool = False) -> IngestReport:
    """Add every document of `source` to the writable sharded collection `col`; `vectors`: precomputed vectors
    in source order instead of embedding the texts; `encoders`: encoder actors Ray Data embeds with.
    `parts`: Ray tasks to read the source in (1: the driver reads it; None: one per `PART_BYTES` of a jsonl
    file, `PART_ROWS` of a parquet one); `readers`: parts read at a time (None: the cluster's CPUs)."""
    if vectors is not None and source.fields.vector is not None:
        raise InvalidInputError(f"vectors are given twice: as an array and as the source's field "
                                f"{source.fields.vector!r}")
    for name, value in (("parts", parts), ("readers", readers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidInputError(f"{name} must be a positive integer or None, got {value!r}")
    report, start, writing = IngestReport(), time.perf_counter(), deque()
    split = _plan(source, parts)
    total = sum(p.rows for p in split) if split is not None else source.rows if progress or vectors is not None \
        else None
    if vectors is not None and len(vectors) != total:
        raise InvalidInputError(f"the vectors have {len(vectors)} rows, {source.path} has {total} documents")
    if split is None:
        batches = _attach(source.batches(batch_size), vectors)
    else:
        readers = readers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
        batches = _parts.read(source, split, batch_size, vectors, readers=readers)
    with tqdm(total=total, unit=" rows", desc=f"indexing {source.path.name}",
              disable=not progress, smoothing=0.05, dynamic_ncols=True) as bar:
        try:
            for batch in batches:
                _start_batch(col, batch, upsert, report, writing, encoders)
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


def _plan(source: Source, parts: int | None) -> list | None:
    """The parts to read `source` in, or None to read it in the driver (one part, or a source that cannot be cut)."""
    if parts is None:
        if source.kind == "parquet":
            parts = -(-source.rows // PART_ROWS)
        elif source.kind == "jsonl" and not source._gzipped:
            parts = -(-source.path.stat().st_size // PART_BYTES)
    if parts is None or parts < 2:
        return None
    split = _parts.plan(source, parts)
    return split if split is not None and len(split) > 1 else None


def _attach(batches, vectors):
    """The driver's batches, each with its rows of the precomputed `vectors` (when given)."""
    for batch in batches:
        if vectors is not None:
            batch.vectors = np.asarray(vectors[batch.start : batch.start + len(batch)], dtype=np.float32)
        yield batch


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
    metadata = [batch.metadata[i] for i in keep]
    while writing:  # the batch before commits first: a shard's writer runs calls side by side, in no set order
        report.added += col.committed(writing.popleft())
    if not upsert and (late := set(col.existing(ids))):  # ids the batch before added after this one was checked
        report.skipped += len(late)
        rows = [i for i, doc_id in enumerate(ids) if doc_id not in late]
        if not rows:
            return
        ids, texts, metadata, vectors = ([ids[i] for i in rows], [texts[i] for i in rows],
                                         [metadata[i] for i in rows], vectors[rows])
    writing.append(col.submit_add(ids, vectors, texts, metadata, upsert))
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
