"""(query, relevant document) text pairs for training: mined from a corpus, read from a BEIR
training split, or read from a pairs file. Never from the split a model is evaluated on."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..data import load_beir, read_corpus_jsonl
from ..errors import InvalidInputError

Pair = tuple[str, str]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MIN_WORDS = 4  # a mined query shorter than this says too little to train on
_MAX_QUERY_WORDS = 16  # a query cut from an unpunctuated text is at most this long


def corpus_pairs(texts: list[str], metadata: list[dict | None]) -> list[Pair]:
    """Pairs mined from documents alone (texts as embedded, title first, and metadata holding
    the title): (title, body) where a document has a title, else (first sentence, the rest) —
    the inverse cloze task — or, in an unpunctuated text, (its first words, the rest).
    No query or judgement is read."""
    pairs = []
    for text, metadata in zip(texts, metadata):
        title = ((metadata or {}).get("title") or "").strip()
        if title and text.startswith(title):
            query, body = title, text[len(title):].strip()
        else:
            first, *rest = _SENTENCE_END.split(text, maxsplit=1)
            query, body = first.strip(), " ".join(rest).strip()
            if not body:  # one unpunctuated run: its first words stand for the query
                words = text.split()
                cut = min(_MAX_QUERY_WORDS, len(words) // 3)
                query, body = " ".join(words[:cut]), " ".join(words[cut:])
        if len(query.split()) >= _MIN_WORDS and body:
            pairs.append((query, body))
    if not pairs:
        raise InvalidInputError("no training pairs could be mined from the corpus (no titles, no multi-sentence texts)")
    return pairs


def beir_pairs(folder, split: str, *, evaluation_split: str | None = "test") -> list[Pair]:
    """(query text, document text) for every relevant judgement in qrels/<split>.tsv, or mined
    from the corpus alone for split 'corpus'; refuses the split the model will be evaluated on."""
    if split == "corpus":
        return corpus_pairs(*read_corpus_jsonl(Path(folder) / "corpus.jsonl")[1:])
    if evaluation_split is not None and split == evaluation_split:
        raise InvalidInputError(
            f"refusing to train on split {split!r}: it is the evaluation split; use a training split such as 'train'"
        )
    dataset = load_beir(folder, split=split)
    docs = dict(zip(dataset.doc_ids, dataset.doc_texts))
    queries = dict(zip(dataset.query_ids, dataset.query_texts))
    pairs = [(queries[qid], docs[doc_id]) for qid, judged in dataset.qrels.items() if qid in queries
             for doc_id, grade in judged.items() if grade > 0 and doc_id in docs]
    if not pairs:
        raise InvalidInputError(f"qrels/{split}.tsv in {folder} gives no (query, document) pair found in the folder")
    return pairs


def read_pairs(path) -> list[Pair]:
    """Pairs from a tab-separated file of `query<TAB>relevant document text`, one per line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"pairs file {path} is missing")
    pairs = []
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise InvalidInputError(f"{path} line {n}: expected 'query<TAB>document text', got {len(row)} field(s)")
            pairs.append((row[0].strip(), row[1].strip()))
    if not pairs:
        raise InvalidInputError(f"pairs file {path} holds no pairs")
    return pairs
