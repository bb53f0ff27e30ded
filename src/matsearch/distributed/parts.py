"""A large source read in parts by Ray tasks: jsonl by byte ranges cut at line starts, parquet by row groups.

`plan(source, parts)` cuts the source: a jsonl file into byte ranges (each holds the lines that start in it),
a parquet file into runs of whole row groups; a compressed or csv/tsv file is not cut (None). Ray tasks count
each jsonl range's lines and documents in parallel, so every part knows its first row and line in the whole
file. `read(...)` then starts a streaming Ray task per part that parses it a batch at a time — with the rows'
precomputed vectors, from the source's vector field or from the array given — and yields its `Batch`es: a
part's batches, then the next part's, the same rows in the same order as reading the source whole, each batch's
`start` and `where` naming its rows in the whole file (a part's last batch may be short).
"""

from __future__ import annotations

import mmap
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import ray

from ..data.sources import Batch, Fields, JsonlSource, ParquetSource, Source, open_source
from ..errors import InvalidInputError

AHEAD = 4  # batches a part's task may parse before the driver takes them


@dataclass(frozen=True)
class Part:
    """One part of a source: bytes [start, end) of a jsonl file, or the row groups `groups` of a parquet file;
    `first_row`/`first_line`: its first document's index and first line's number in the whole file."""

    index: int
    start: int = 0
    end: int = 0
    groups: tuple[int, ...] = ()
    rows: int = 0
    first_row: int = 0
    first_line: int = 1


def plan(source: Source, parts: int) -> list[Part] | None:
    """The source cut into at most `parts` parts (counted in parallel for jsonl), or None where it cannot be."""
    if isinstance(source, ParquetSource):
        return _row_group_parts(source.row_groups(), parts)
    if not isinstance(source, JsonlSource) or source._gzipped:
        return None
    spans = source.spans(parts)
    counts = ray.get([_count.remote(str(source.path), source.fields, a, b) for a, b in spans])
    out, row, line = [], 0, 1
    for n, ((a, b), (lines, rows)) in enumerate(zip(spans, counts)):
        out.append(Part(n, start=a, end=b, rows=rows, first_row=row, first_line=line))
        row, line = row + rows, line + lines
    return out


def _row_group_parts(groups: list[int], parts: int) -> list[Part]:
    """Runs of consecutive row groups, about `sum(groups) / parts` rows each."""
    total, out, run, row = sum(groups), [], [], 0
    target = max(total / max(parts, 1), 1)
    for g, rows in enumerate(groups):
        run.append(g)
        if sum(groups[i] for i in run) >= target or g == len(groups) - 1:
            size = sum(groups[i] for i in run)
            out.append(Part(len(out), groups=tuple(run), rows=size, first_row=row))
            row, run = row + size, []
    return out


def read(source: Source, parts: list[Part], size: int, vectors=None, *, readers: int) -> Iterator[Batch]:
    """The source's batches, part after part, each part read by its own streaming Ray task; at most `readers`
    tasks run at a time (started in order, so the part the driver waits on is always running)."""
    path, fields = str(source.path), source.fields
    started: deque = deque()
    waiting = deque(parts)
    try:
        while waiting or started:
            while waiting and len(started) < readers:
                part = waiting.popleft()
                started.append(_read.remote(path, fields, part, size, _vectors_of(vectors, part)))
            for ref in started[0]:
                item = ray.get(ref)
                if isinstance(item, str):
                    raise InvalidInputError(item)
                yield item
            started.popleft()
    finally:  # a failure, or the caller stopped early: the parts still being read are not needed
        for reading in started:
            ray.cancel(reading)


def _vectors_of(vectors, part: Part):
    """What a part's task needs to find its rows' vectors: a memory-mapped .npy's file, else its rows."""
    if vectors is None:
        return None
    if isinstance(vectors, np.memmap) and isinstance(vectors.base, mmap.mmap) and vectors.ndim == 2:  # not a view
        return ("file", vectors.filename, vectors.offset, vectors.dtype.str, vectors.shape,
                bool(vectors.flags.f_contiguous and not vectors.flags.c_contiguous))
    return ray.put(np.asarray(vectors[part.first_row : part.first_row + part.rows], dtype=np.float32))


@ray.remote(num_cpus=0)
def _count(path: str, fields: Fields, start: int, end: int) -> tuple[int, int]:
    return open_source(Path(path), fields).count_span(start, end)


# num_cpus=0: a part's task spends its time parsing or blocked until the driver takes its batches; asking for a
# CPU could leave none for the encoder actors the driver waits on. `readers` bounds how many run.
@ray.remote(num_cpus=0, num_returns="streaming", _generator_backpressure_num_objects=AHEAD)
def _read(path: str, fields: Fields, part: Part, size: int, vectors):
    """Yield the part's batches (a failure: its message, so the driver raises it as the source's error)."""
    source = open_source(Path(path), fields)
    if isinstance(vectors, ray.ObjectRef):
        vectors = ray.get(vectors)
    elif isinstance(vectors, tuple):
        _, file, offset, dtype, shape, fortran = vectors
        vectors = np.memmap(file, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape,
                            order="F" if fortran else "C")[part.first_row : part.first_row + part.rows]
    try:
        if isinstance(source, ParquetSource):
            batches = source.batches(size, row_groups=list(part.groups), first_row=part.first_row)
        else:
            batches = source.span_batches(size, part.start, part.end, first_row=part.first_row,
                                          first_line=part.first_line)
        for batch in batches:
            if vectors is not None:
                at = batch.start - part.first_row
                batch.vectors = np.asarray(vectors[at : at + len(batch)], dtype=np.float32)
            yield batch
    except InvalidInputError as exc:
        yield str(exc)
