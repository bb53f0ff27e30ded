"""Streaming readers of document sources: jsonl, csv/tsv and parquet, a batch of rows at a time.

A source maps its fields to what a collection stores (`Fields`): an id, a text (a title, when
there is one, is embedded before it as ``title + " " + text``, as BEIR does), metadata (a JSON
object per document) and, optionally, a precomputed vector. `open_source(path, fields)` picks
the reader by the file's suffix (``.jsonl``/``.ndjson``, ``.csv``, ``.tsv``, each optionally
``.gz``; ``.parquet``/``.pq``) and checks the mapping against the header or schema before any
row is read; `Source.batches(size)` then yields `Batch`es of at most `size` rows, so memory
holds one batch (for parquet: one batch and the pages it is decoded from).

Every problem is an `InvalidInputError` naming the file and the line (jsonl, csv) or row
(parquet) at fault, raised before the batch that holds it is yielded.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InvalidInputError
from .beir import json_object

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
           ".pq": "parquet"}
_ID_DEFAULTS = ("_id", "id")


@dataclass(frozen=True)
class Fields:
    """Which field of a source holds what.

    `id`: None takes ``_id``, or else ``id``. `title`: None takes ``title`` where the source has one.
    `metadata`: the fields kept as each document's metadata; None keeps every field not named as
    the id, text or vector (the title included). `vector`: a field of precomputed vectors (a list of
    numbers; in csv/tsv, JSON text such as ``[0.1, 0.2]``), or None to embed the texts.
    """

    id: str | None = None
    text: str = "text"
    title: str | None = None
    metadata: tuple[str, ...] | None = None
    vector: str | None = None

    def __post_init__(self):
        named = [("id", self.id), ("text", self.text), ("title", self.title), ("vector", self.vector)]
        for role, name in named + [("metadata", m) for m in self.metadata or ()]:
            if name is not None and (not isinstance(name, str) or not name):
                raise InvalidInputError(f"the {role} field must be a non-empty name, got {name!r}")
        if self.metadata is not None and len(set(self.metadata)) != len(self.metadata):
            raise InvalidInputError(f"metadata fields are named twice: {list(self.metadata)}")


@dataclass
class Batch:
    """Consecutive rows of a source: `start` is the first one's index (0-based), `where` names them.
    `documents`: the source rows the batch holds, where that differs from its items (passages)."""

    start: int
    ids: list[str]
    texts: list[str]
    metadata: list[dict | None]
    vectors: np.ndarray | None
    where: str
    documents: int | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def rows(self) -> int:
        """Source rows in the batch."""
        return len(self.ids) if self.documents is None else self.documents


def open_source(path, fields: Fields | None = None) -> "Source":
    """The reader for `path` (by its suffix), its mapping checked against the file's header or schema."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"source file {path} is missing" if not path.exists()
                                else f"source {path} is not a file")
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    gzipped = bool(suffixes) and suffixes[-1] == ".gz"
    kind = FORMATS.get(suffixes[-2] if gzipped and len(suffixes) == 2 else (suffixes or [""])[-1])
    if kind is None or (gzipped and kind == "parquet"):
        raise InvalidInputError(f"cannot tell the format of {path} from its name: expected a name ending in "
                                ".jsonl, .ndjson, .csv or .tsv (each optionally .gz), or .parquet")
    fields = fields or Fields()
    if kind == "jsonl":
        return JsonlSource(path, fields, gzipped=gzipped)
    if kind == "parquet":
        return ParquetSource(path, fields)
    return CsvSource(path, fields, gzipped=gzipped, delimiter="\t" if kind == "tsv" else ",")


class Source:
    """A file of documents, read in batches; `rows` counts its documents (a pass over a text file)."""

    kind = ""

    def __init__(self, path: Path, fields: Fields):
        self.path, self.fields = Path(path), fields
        self._rows: int | None = None
        self._width: int | None = None  # the vector field's width, from the first row that has one

    @property
    def rows(self) -> int:
        if self._rows is None:
            self._rows = self._count()
        return self._rows

    def _count(self) -> int:
        raise NotImplementedError

    def batches(self, size: int = 10_000) -> Iterator[Batch]:
        raise NotImplementedError

    def _check_size(self, size: int) -> int:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidInputError(f"batch size must be a positive integer, got {size!r}")
        return size

    def _check_width(self, width: int, where: str) -> None:
        if self._width is None:
            self._width = width
        elif width != self._width:
            raise InvalidInputError(f"{where}: vector field {self.fields.vector!r} has {width} values, earlier rows "
                                    f"have {self._width}")

    def _text(self, open_binary: bool = False):
        opener = gzip.open if self._gzipped else open
        try:
            return opener(self.path, "rb") if open_binary else opener(self.path, "rt", encoding="utf-8", newline="")
        except OSError as exc:
            raise InvalidInputError(f"cannot read {self.path}: {exc}") from None


class _Rows:
    """Maps dict rows (jsonl, or csv rows keyed by the header) to a batch's columns."""

    def __init__(self, source: Source, *, from_text: bool):
        self.source, self.fields, self.from_text = source, source.fields, from_text
        self.start = 0
        self.clear()

    def clear(self) -> None:
        self.ids, self.texts, self.metadata, self.vectors = [], [], [], []
        self.first_line = self.last_line = None

    def add(self, row: dict, line: int) -> None:
        f, where = self.fields, f"{self.source.path} line {line}"
        id_field = f.id or next((name for name in _ID_DEFAULTS if name in row), _ID_DEFAULTS[0])
        doc_id = _id(_field(row, id_field, "the id", "--id-field", where), where)
        text = _field(row, f.text, "the text", "--text-field", where)
        if text is not None and not isinstance(text, str):
            raise InvalidInputError(f"{where}: text field {f.text!r} holds a {type(text).__name__}, not a string")
        title_field = f.title or ("title" if "title" in row else None)
        title = None if title_field is None else _field(row, title_field, "the title", "--title-field", where)
        if title is not None and not isinstance(title, str):
            title = str(title)
        if f.vector is not None:
            self.vectors.append(self._vector(_field(row, f.vector, "the vector", "--vector-field", where), where))
        if f.metadata is None:
            skip = {id_field, f.text, f.vector}
            meta = {k: v for k, v in row.items() if k not in skip}
        else:
            meta = {k: row[k] for k in f.metadata if k in row}
        self.ids.append(doc_id)
        self.texts.append(f"{title or ''} {text or ''}".strip())
        self.metadata.append(meta or None)
        self.first_line = line if self.first_line is None else self.first_line
        self.last_line = line

    def _vector(self, value, where: str) -> np.ndarray:
        if self.from_text and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise InvalidInputError(f"{where}: vector field {self.fields.vector!r} is not a JSON list of "
                                        f"numbers: {value[:40]!r}") from None
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in value):
            raise InvalidInputError(f"{where}: vector field {self.fields.vector!r} must be a list of numbers, "
                                    f"got {_kind(value)}")
        self.source._check_width(len(value), where)
        return np.asarray(value, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def flush(self) -> Batch:
        vectors = np.stack(self.vectors) if self.vectors else None
        batch = Batch(self.start, self.ids, self.texts, self.metadata, vectors,
                      f"{self.source.path} lines {self.first_line}-{self.last_line}")
        self.start += len(self.ids)
        self.clear()
        return batch


class JsonlSource(Source):
    """One JSON object per line; blank lines are skipped."""

    kind = "jsonl"

    def __init__(self, path: Path, fields: Fields, *, gzipped: bool = False):
        super().__init__(path, fields)
        self._gzipped = gzipped

    def _count(self) -> int:
        with self._text(open_binary=True) as f:
            return sum(1 for line in f if line.strip())

    def batches(self, size: int = 10_000) -> Iterator[Batch]:
        size = self._check_size(size)
        rows = _Rows(self, from_text=False)
        with self._text() as f:
            for n, line in enumerate(_lines(f, self.path), start=1):
                if not line.strip():
                    continue
                rows.add(json_object(line, self.path, n), n)
                if len(rows) == size:
                    yield rows.flush()
        if len(rows):
            yield rows.flush()

    # Reading a part of the file (distributed/parts.py): a byte range [start, end) holds the lines that start
    # in it; a part that does not start at 0 skips the rest of the line it starts in.
    def spans(self, parts: int) -> list[tuple[int, int]]:
        """The file's bytes cut into `parts` ranges of about equal size (uncompressed files only)."""
        if self._gzipped:
            raise InvalidInputError(f"{self.path} is compressed: it cannot be read in parts")
        size = self.path.stat().st_size
        cuts = sorted({size * n // max(parts, 1) for n in range(max(parts, 1))} | {size})
        return list(zip(cuts[:-1], cuts[1:])) or [(0, 0)]

    def count_span(self, start: int, end: int) -> tuple[int, int]:
        """(lines, documents) among the lines that start in bytes [start, end); blank lines are no document."""
        lines = documents = 0
        for line in self._span_lines(start, end):
            lines += 1
            documents += bool(line.strip())
        return lines, documents

    def span_batches(self, size: int, start: int, end: int, *, first_row: int = 0,
                     first_line: int = 1) -> Iterator[Batch]:
        """`batches` of the lines that start in bytes [start, end): `first_row` and `first_line` are the
        part's first document's index and its first line's number in the whole file."""
        size = self._check_size(size)
        rows = _Rows(self, from_text=False)
        rows.start = first_row
        for n, raw in enumerate(self._span_lines(start, end), start=first_line):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInputError(f"cannot read {self.path} line {n}: {exc}") from None
            rows.add(json_object(line, self.path, n), n)
            if len(rows) == size:
                yield rows.flush()
        if len(rows):
            yield rows.flush()

    def _span_lines(self, start: int, end: int) -> Iterator[bytes]:
        try:
            with open(self.path, "rb") as f:
                if start > 0:
                    f.seek(start - 1)
                    f.readline()  # the line holding byte start - 1 belongs to the part before
                at = f.tell()
                while at < end:
                    line = f.readline()
                    if not line:
                        return
                    yield line
                    at += len(line)
        except OSError as exc:
            raise InvalidInputError(f"cannot read {self.path}: {exc}") from None


class CsvSource(Source):
    """A header line naming the columns, then one document per record (csv: quoted fields; tsv: no quoting)."""

    def __init__(self, path: Path, fields: Fields, *, gzipped: bool = False, delimiter: str = ","):
        super().__init__(path, fields)
        self._gzipped, self.delimiter = gzipped, delimiter
        self.kind = "tsv" if delimiter == "\t" else "csv"
        self.header = self._read_header()
        self._check_columns()

    def _reader(self, f):
        csv.field_size_limit(sys.maxsize)
        quoting = csv.QUOTE_NONE if self.delimiter == "\t" else csv.QUOTE_MINIMAL
        return csv.reader(_lines(f, self.path), delimiter=self.delimiter, quoting=quoting)

    def _read_header(self) -> list[str]:
        with self._text() as f:
            header = next(self._reader(f), None)
        if not header:
            raise InvalidInputError(f"{self.path} is empty: a header line naming the columns comes first")
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise InvalidInputError(f"{self.path} names columns twice in its header: {dupes}")
        return header

    def _check_columns(self) -> None:
        check_columns(self.path, self.header, self.fields)

    def _count(self) -> int:
        with self._text() as f:
            return max(sum(1 for row in self._reader(f) if row) - 1, 0)

    def batches(self, size: int = 10_000) -> Iterator[Batch]:
        size = self._check_size(size)
        rows, width = _Rows(self, from_text=True), len(self.header)
        with self._text() as f:
            reader = self._reader(f)
            try:
                next(reader)
                for values in reader:
                    if not values:
                        continue
                    line = reader.line_num
                    if len(values) != width:
                        raise InvalidInputError(f"{self.path} line {line} has {len(values)} fields, the header names "
                                                f"{width}")
                    rows.add(dict(zip(self.header, values)), line)
                    if len(rows) == size:
                        yield rows.flush()
            except csv.Error as exc:
                raise InvalidInputError(f"{self.path} line {reader.line_num} is not valid {self.kind}: {exc}") from None
        if len(rows):
            yield rows.flush()


class ParquetSource(Source):
    """A parquet file, read a row group at a time (with pyarrow); only the mapped columns are read."""

    kind = "parquet"

    def __init__(self, path: Path, fields: Fields):
        super().__init__(path, fields)
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        try:
            # read a page at a time: pyarrow's default pre-buffering would keep every row group read in memory
            self._file = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInputError(f"cannot read parquet file {self.path}: {exc}") from None
        schema = self._file.schema_arrow
        self.header = list(schema.names)
        self.mapped = check_columns(self.path, self.header, fields)
        text_like = (pa.types.is_string, pa.types.is_large_string, pa.types.is_null)
        for role, name in (("text", self.mapped["text"]), ("title", self.mapped["title"])):
            if name is not None and not any(test(schema.field(name).type) for test in text_like):
                raise InvalidInputError(f"{self.path}: the {role} column {name!r} holds {schema.field(name).type}, "
                                        "not strings")
        if fields.vector is not None:
            kind = schema.field(fields.vector).type
            if not (_is_list(pa, kind) and (pa.types.is_floating(kind.value_type) or
                                            pa.types.is_integer(kind.value_type))):
                raise InvalidInputError(f"{self.path}: vector column {fields.vector!r} holds {kind}, not lists of "
                                        "numbers")

    def _count(self) -> int:
        return self._file.metadata.num_rows

    def row_groups(self) -> list[int]:
        """The rows of each of the file's row groups, in order: the parts it can be read in."""
        meta = self._file.metadata
        return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]

    def batches(self, size: int = 10_000, *, row_groups: list[int] | None = None,
                first_row: int = 0) -> Iterator[Batch]:
        """Batches of the whole file, or of the row groups `row_groups` (in order; `first_row`: the index of
        their first row in the whole file)."""
        size = self._check_size(size)
        pa, m = self._pa, self.mapped
        columns = list(dict.fromkeys(c for c in [m["id"], m["text"], m["title"], m["vector"], *m["metadata"]]
                                     if c is not None))
        start = first_row
        batches = self._file.iter_batches(batch_size=size, columns=columns, row_groups=row_groups)
        while True:
            try:
                table = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise InvalidInputError(f"cannot read parquet file {self.path} past row {start}: {exc}") from None
            yield self._batch(table, start)
            start += table.num_rows

    def _batch(self, table, start: int) -> Batch:
        m, n = self.mapped, table.num_rows
        where = f"{self.path} rows {start + 1}-{start + n}"
        ids = table.column(m["id"]).to_pylist()
        for i, doc_id in enumerate(ids):
            ids[i] = _id(doc_id, f"{self.path} row {start + i + 1}")
        texts = table.column(m["text"]).to_pylist()
        if m["title"] is not None:
            texts = [f"{t or ''} {x or ''}".strip() for t, x in zip(table.column(m["title"]).to_pylist(), texts)]
        else:
            texts = [(x or "").strip() for x in texts]
        columns = {name: _jsonable(self._pa, table.column(name)) for name in m["metadata"]}
        metadata = [dict(zip(columns, values)) or None for values in zip(*columns.values())] if columns else [None] * n
        vectors = None if m["vector"] is None else self._vectors(table.column(m["vector"]), start)
        return Batch(start, ids, texts, metadata, vectors, where)

    def _vectors(self, column, start: int) -> np.ndarray:
        pa, name = self._pa, self.fields.vector
        import pyarrow.compute as pc

        array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        if array.null_count:
            row = start + int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0]) + 1
            raise InvalidInputError(f"{self.path} row {row}: vector column {name!r} is null")
        lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
        if len(lengths):
            self._check_width(int(lengths[0]), f"{self.path} row {start + 1}")
            wrong = np.flatnonzero(lengths != self._width)
            if len(wrong):
                self._check_width(int(lengths[wrong[0]]), f"{self.path} row {start + int(wrong[0]) + 1}")
        values = array.flatten().to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=np.float32).reshape(len(array), self._width or 0)


def check_columns(path: Path, columns: list[str], fields: Fields) -> dict:
    """The column each role maps to in a file with these `columns`; a column not there is an error naming it."""
    present = set(columns)

    def need(name: str, role: str, option: str) -> str:
        if name not in present:
            raise InvalidInputError(f"{path} has no column {name!r} ({role}, {option}); its columns: "
                                    f"{', '.join(columns)}")
        return name

    if fields.id is not None:
        id_column = need(fields.id, "the id", "--id-field")
    else:
        id_column = next((c for c in _ID_DEFAULTS if c in present), None)
        if id_column is None:
            raise InvalidInputError(f"{path} has no column '_id' or 'id' for the ids (--id-field names another); "
                                    f"its columns: {', '.join(columns)}")
    mapped = {"id": id_column, "text": need(fields.text, "the text", "--text-field"),
              "title": need(fields.title, "the title", "--title-field") if fields.title is not None
              else ("title" if "title" in present else None),
              "vector": None if fields.vector is None else need(fields.vector, "the vectors", "--vector-field")}
    if fields.metadata is None:
        mapped["metadata"] = [c for c in columns if c not in (id_column, fields.text, fields.vector)]
    else:
        mapped["metadata"] = [need(c, "metadata", "--metadata-fields") for c in fields.metadata]
    return mapped


def _lines(f, path: Path):
    """The file's lines; a decoding or decompression failure is an error naming the file."""
    try:
        yield from f
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None


def _field(row: dict, name: str, role: str, option: str, where: str):
    try:
        return row[name]
    except KeyError:
        raise InvalidInputError(f"{where} has no field {name!r} ({role}; {option} names another)") from None


def _id(value, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise InvalidInputError(f"{where}: the id must be a non-empty string or an integer, got {value!r}")
    return str(value)


def _kind(value) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _is_list(pa, kind) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _jsonable(pa, column) -> list:
    """A metadata column as JSON-ready Python values (dates, times, decimals and bytes as strings)."""
    kind = column.type
    if pa.types.is_temporal(kind) or pa.types.is_decimal(kind):
        return [None if v is None else str(v) for v in column.to_pylist()]
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return [None if v is None else v.decode("utf-8", "replace") for v in column.to_pylist()]
    return column.to_pylist()
