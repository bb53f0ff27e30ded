"""BEIR layout: corpus.jsonl, queries.jsonl and qrels/<split>.tsv in one folder."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInputError


@dataclass
class BeirDataset:
    """A corpus, its queries, and graded relevance judgements (qrels[qid][doc_id] = grade)."""

    doc_ids: list[str]
    doc_texts: list[str]
    doc_metadata: list[dict | None]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


def read_corpus_jsonl(path) -> tuple[list[str], list[str], list[dict | None]]:
    """Ids, texts and metadata from a jsonl file of `{"_id"|"id", "title"?, "text", ...}`.

    The text embedded is ``title + " " + text`` (stripped), as BEIR does; every
    other field, and the title, go into metadata.
    """
    ids, texts, metadata = [], [], []
    for n, row in enumerate(_read_jsonl(path), start=1):
        doc_id = row.pop("_id", row.pop("id", None))
        if doc_id is None or "text" not in row:
            raise InvalidInputError(f"{path} line {n}: each line needs an '_id' (or 'id') and a 'text' field")
        text = f"{row.get('title') or ''} {row.pop('text') or ''}".strip()
        ids.append(str(doc_id))
        texts.append(text)
        metadata.append(row or None)
    if not ids:
        raise InvalidInputError(f"{path} holds no documents")
    return ids, texts, metadata


def load_beir(folder, split: str = "test", *, require_qrels: bool = True) -> BeirDataset:
    """Read a BEIR folder; queries are kept in file order (the order of its query vectors).
    Without `require_qrels`, a missing qrels/<split>.tsv gives empty qrels."""
    folder = Path(folder)
    if not (folder / "corpus.jsonl").is_file():
        raise InvalidInputError(f"{folder} is not a BEIR folder: corpus.jsonl is missing")
    doc_ids, doc_texts, doc_metadata = read_corpus_jsonl(folder / "corpus.jsonl")
    qrels = folder / "qrels" / f"{split}.tsv"
    query_ids, query_texts = [], []
    for n, row in enumerate(_read_jsonl(folder / "queries.jsonl"), start=1):
        if "_id" not in row or not isinstance(row.get("text"), str):
            raise InvalidInputError(f"{folder / 'queries.jsonl'} line {n}: each query needs '_id' and 'text'")
        query_ids.append(str(row["_id"]))
        query_texts.append(row["text"])
    return BeirDataset(
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        doc_metadata=doc_metadata,
        query_ids=query_ids,
        query_texts=query_texts,
        qrels=read_qrels(qrels) if require_qrels or qrels.is_file() else {},
    )


def read_qrels(path) -> dict[str, dict[str, int]]:
    """query id → {doc id: grade} from a tsv with a header line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"qrels file {path} is missing")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader, None)
        for n, row in enumerate(reader, start=2):
            try:
                qid, doc_id, grade = row[0], row[1], int(row[2])
            except (IndexError, ValueError):
                raise InvalidInputError(f"{path} line {n}: expected query-id, corpus-id, score") from None
            qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def _read_jsonl(path):
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"file {path} is missing")
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                yield json_object(line, path, n)


def json_object(line: str, path, n: int) -> dict:
    """Line `n` of a jsonl file as a dict, or an InvalidInputError naming the file and line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} line {n} is not valid JSON: {exc}") from None
    if not isinstance(row, dict):
        raise InvalidInputError(f"{path} line {n} is not a JSON object")
    return row
