"""The lexical index: BM25 (bm25s) over the collection's texts, derived from docs.sqlite and saved with it.

Texts are split like scikit-learn's CountVectorizer, lower-cased, stripped of English
stop words and stemmed by the Snowball English stemmer (PyStemmer); bm25s scores them
with Lucene's BM25 (k1 = 1.5, b = 0.75). Only rows with a text that has a token are
indexed, so items without text are never lexical results; deleted rows are skipped at
search time by the collection's dead-row mask.

On disk, ``lexical.<N>/``::

    meta.json          format and version, the rows covered, the compaction epoch of their
                       numbering, the settings, and size + CRC-32 of every other file
    doc_rows.npy       BM25 document → store row
    tokens.npy, offsets.npy
                       each document's token ids (document d: tokens[offsets[d]:offsets[d + 1]]),
                       so rows added later are tokenised alone
    *.index.npy/json   the bm25s index (bm25s's own `save` format, memory-mapped on load)

A save writes ``lexical.<N>.staging/`` and renames it ``lexical.<N>`` (the commit
point); readers take the highest N. Rows added after a saved index are tokenised on
the next lexical search and the BM25 scores rebuilt from the token ids of every
document (exact statistics, no re-tokenising; bm25s needs ~50 µs a document); the
writer saves the grown index when it closes. A missing, stale (from before a
compaction) or damaged folder is rebuilt from the texts in memory, with a warning
for a damaged one; dense search never touches it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CollectionError
from .refit import fsync_tree

log = logging.getLogger(__name__)

FORMAT, FORMAT_VERSION = "matsearch-lexical", 1
SETTINGS = {"k1": 1.5, "b": 0.75, "method": "lucene", "stopwords": "en", "stemmer": "english"}
PREFIX = "lexical"
_VERIFY_BYTES = 64 << 20  # CRCs checked on load up to this size (`matsearch check` always checks them)
_CRC_CHUNK = 1 << 24


_SPLIT = re.compile(r"(?u)\b\w\w+\b")  # bm25s's (and scikit-learn's) token pattern
_STEMMERS = threading.local()  # a PyStemmer stemmer is not thread-safe: one per thread


def tokenize(texts: list[str]) -> list[list[str]]:
    """Each text's tokens: lower-cased words of 2+ characters, bm25s's English stop words removed, stemmed by
    PyStemmer's Snowball English stemmer — what `bm25s.tokenize(texts, stopwords="en", stemmer=...,
    return_ids=False)` gives (tested), without its per-call set-up: 12 µs a query instead of 70."""
    stem = getattr(_STEMMERS, "stem", None)
    if stem is None:
        import Stemmer

        stem = _STEMMERS.stem = Stemmer.Stemmer(SETTINGS["stemmer"]).stemWords
    stopwords = _stopwords()
    return [stem([w for w in _SPLIT.findall(text.lower()) if w not in stopwords]) for text in texts]


@functools.cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@dataclass
class LexicalHits:
    """Top rows per query (-1 where a query matched fewer), their BM25 scores (-inf there), the postings read."""

    rows: np.ndarray
    scores: np.ndarray
    postings: int
    matched: int  # documents with a score above 0, summed over the queries


class LexicalIndex:
    """BM25 over the texts of store rows [0, rows_) numbered as at compaction epoch `epoch_`.

    Never changed once made (`extend` returns a new index), so searches read one without a lock.
    """

    def __init__(self, *, epoch: int = 0):
        self.epoch_, self.rows_ = int(epoch), 0
        self.vocab_: dict[str, int] = {}
        self.doc_rows_ = np.zeros(0, dtype=np.int64)
        self.tokens_ = np.zeros(0, dtype=np.int32)
        self.offsets_ = np.zeros(1, dtype=np.int64)
        self.model_ = None  # a bm25s.BM25, once a document is indexed

    @property
    def documents(self) -> int:
        return len(self.doc_rows_)

    def extend(self, rows: np.ndarray, texts: list[str], count: int) -> "LexicalIndex":
        """A new index also covering rows up to `count`, of which `rows` (ascending, ≥ rows_) hold `texts`."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows[0] < self.rows_ or rows[-1] >= count):
            raise ValueError(f"rows {rows[0]}..{rows[-1]} are outside the rows added ({self.rows_}..{count - 1})")
        vocab, new_rows, new_tokens, lengths = dict(self.vocab_), [], [], []
        for row, doc in zip(rows, tokenize(texts) if texts else []):
            if doc:
                new_rows.append(row)
                new_tokens.extend(vocab.setdefault(t, len(vocab)) for t in doc)
                lengths.append(len(doc))
        grown = LexicalIndex(epoch=self.epoch_)
        grown.rows_, grown.vocab_ = max(self.rows_, int(count)), vocab
        grown.doc_rows_ = np.concatenate([self.doc_rows_, np.array(new_rows, dtype=np.int64)])
        grown.tokens_ = np.concatenate([self.tokens_, np.array(new_tokens, dtype=np.int32)])
        grown.offsets_ = np.concatenate([self.offsets_, self.offsets_[-1] + np.cumsum(lengths, dtype=np.int64)])
        grown.model_ = grown._score() if new_rows else self.model_
        return grown

    def _score(self):
        """The bm25s index of every document, built from the token ids (statistics over all of them)."""
        import bm25s

        if not self.documents:
            return None
        flat, ends = self.tokens_.tolist(), self.offsets_.tolist()
        docs = [flat[ends[d]:ends[d + 1]] for d in range(self.documents)]
        model = bm25s.BM25(k1=SETTINGS["k1"], b=SETTINGS["b"], method=SETTINGS["method"])
        model.index((docs, dict(self.vocab_)), create_empty_token=False, show_progress=False)
        return model

    def search(self, texts: list[str], depth: int, dead: np.ndarray | None, count: int) -> LexicalHits:
        """The best `depth` live rows below `count` for each text query, by BM25 score (only rows that match a
        query term; ties by row). `dead` marks deleted rows (shorter than `count`: the rest are live)."""
        rows = np.full((len(texts), depth), -1, dtype=np.int64)
        scores = np.full((len(texts), depth), -np.inf, dtype=np.float32)
        if self.model_ is None:
            return LexicalHits(rows, scores, 0, 0)
        excluded = None
        if self.doc_rows_[-1] >= count or (dead is not None and len(dead)):
            excluded = self.doc_rows_ >= count
            if dead is not None and len(dead):
                inside = np.flatnonzero(self.doc_rows_ < min(count, len(dead)))
                excluded[inside] = dead[self.doc_rows_[inside]]
        indptr, postings, matched = self.model_.scores["indptr"], 0, 0
        for q, doc in enumerate(tokenize(texts)):
            ids = np.array([self.vocab_[t] for t in doc if t in self.vocab_], dtype=np.int64)
            if not len(ids):
                continue
            postings += int((indptr[ids + 1] - indptr[ids]).sum())
            values = self.model_.get_scores_from_ids(ids)
            if excluded is not None:
                values[excluded] = 0
            hits = np.flatnonzero(values > 0)
            matched += len(hits)
            if len(hits) > depth:
                hits = hits[np.argpartition(-values[hits], depth - 1)[:depth]]
            hits = hits[np.lexsort((hits, -values[hits]))]
            rows[q, : len(hits)], scores[q, : len(hits)] = self.doc_rows_[hits], values[hits]
        return LexicalHits(rows, scores, postings, matched)

    # -- files ---------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write the index into the new folder `folder` (its meta.json last)."""
        folder.mkdir(parents=True)
        for name, array in (("doc_rows", self.doc_rows_), ("tokens", self.tokens_), ("offsets", self.offsets_)):
            np.save(folder / f"{name}.npy", np.ascontiguousarray(array))
        if self.model_ is not None:
            self.model_.save(folder, show_progress=False)
        files = {p.name: {"bytes": p.stat().st_size, "crc32": _crc(p)} for p in sorted(folder.iterdir())}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "rows": self.rows_, "epoch": self.epoch_,
                "documents": self.documents, "tokens": len(self.tokens_), "vocabulary": len(self.vocab_),
                **SETTINGS, "files": files}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: Path, *, verify: bool | None = None) -> "LexicalIndex":
        """Read a saved index; a damaged one raises CollectionError naming the file. CRCs are checked when
        `verify` (default: when the files hold at most 64 MB)."""
        meta = read_meta(folder)
        problems = verify_files(folder, meta, crc=verify)
        if problems:
            raise CollectionError("; ".join(f"{file}: {problem}" for file, problem in problems))
        index = cls(epoch=meta["epoch"])
        index.rows_ = int(meta["rows"])
        try:
            index.doc_rows_, index.tokens_, index.offsets_ = (
                np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False).view(np.ndarray)
                for name in ("doc_rows", "tokens", "offsets"))
            if meta["documents"]:
                import bm25s

                index.model_ = bm25s.BM25.load(folder, mmap=True, show_progress=False)
                index.vocab_ = index.model_.vocab_dict
                # plain arrays over the same mapped pages: a numpy.memmap pays Python overhead on every slice
                index.model_.scores = {key: value.view(np.ndarray) if isinstance(value, np.memmap) else value
                                       for key, value in index.model_.scores.items()}
            consistent = (len(index.doc_rows_) == meta["documents"] == len(index.offsets_) - 1
                          and len(index.tokens_) == meta["tokens"] == index.offsets_[-1]
                          and len(index.vocab_) == meta["vocabulary"]
                          and (index.model_ is None or index.model_.scores["num_docs"] == meta["documents"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CollectionError(f"lexical index {folder} is unreadable ({type(exc).__name__}: {exc})") from None
        if not consistent:
            raise CollectionError(f"lexical index {folder}: its arrays disagree with {folder / 'meta.json'}")
        return index


def read_meta(folder: Path) -> dict:
    file = folder / "meta.json"
    try:
        meta = json.loads(file.read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("not a matsearch lexical index")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format version {meta.get('format_version')}; this matsearch reads {FORMAT_VERSION}")
        for key in ("rows", "epoch", "documents", "tokens", "vocabulary", "files"):
            meta[key]  # noqa: B018 - a missing key is the finding
    except (OSError, ValueError, KeyError) as exc:
        raise CollectionError(f"{file} is unreadable or corrupt ({type(exc).__name__}: {exc})") from None
    return meta


def verify_files(folder: Path, meta: dict, *, crc: bool | None = None) -> list[tuple[str, str]]:
    """(file, problem) for every file of the folder that is missing, of the wrong size or (with `crc`) content."""
    files = meta["files"]
    if crc is None:
        crc = sum(f["bytes"] for f in files.values()) <= _VERIFY_BYTES
    problems = []
    for name, expected in files.items():
        file = folder / name
        if not file.is_file():
            problems.append((str(file), "missing"))
        elif file.stat().st_size != expected["bytes"]:
            problems.append((str(file), f"{file.stat().st_size} bytes, expected {expected['bytes']}"))
        elif crc and _crc(file) != expected["crc32"]:
            problems.append((str(file), "checksum mismatch (the file was changed or damaged)"))
    return problems


def _crc(path: Path) -> int:
    value = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CRC_CHUNK):
            value = zlib.crc32(chunk, value)
    return value


def current_folder(path: Path) -> Path | None:
    """The newest saved lexical index of the collection at `path` (None if there is none)."""
    numbers = [int(p.name.split(".")[1]) for p in path.glob(f"{PREFIX}.*")
               if p.name.count(".") == 1 and p.name.split(".")[1].isdigit() and p.is_dir()]
    return path / f"{PREFIX}.{max(numbers)}" if numbers else None


def is_lexical_file(path: Path, file: str) -> bool:
    """Whether `file` (as `matsearch check` names it) belongs to the lexical index of the collection at `path`."""
    try:
        return Path(file).relative_to(path).parts[0].startswith(f"{PREFIX}.")
    except (ValueError, IndexError):
        return False


def check_lexical(path: Path, docs, rows: int) -> list[tuple[str, str]]:
    """`matsearch check`'s findings on the lexical index: (file, problem) pairs, all derived data."""
    folder = current_folder(path)
    if folder is None:
        if docs.has_text(rows):
            return [(str(path / f"{PREFIX}.*"), "the lexical index is missing (lexical and hybrid search rebuild "
                     "it in memory at every open)")]
        return []
    try:
        meta = read_meta(folder)
    except CollectionError as exc:
        return [(str(folder / "meta.json"), str(exc))]
    problems = verify_files(folder, meta, crc=True)
    if not problems and meta["rows"] > rows:
        problems.append((str(folder / "meta.json"), f"covers {meta['rows']} rows, but only {rows} are committed"))
    if not problems:
        try:
            LexicalIndex.load(folder, verify=False)
        except CollectionError as exc:
            problems.append((str(folder), str(exc)))
    return problems


class Lexical:
    """A collection's lexical index: loaded on the first lexical search, extended to the rows committed since,
    saved by the writer (`persist`). Thread-safe; building never holds the collection's lock."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.index_: LexicalIndex | None = None
        self._manifest_epoch: int | None = None  # the collection's manifest epoch index_ was checked at
        self.saved_: tuple[int, int] | None = None  # (rows, epoch) of the folder on disk, as this process knows it

    def current(self, docs, count: int, manifest_epoch: int) -> LexicalIndex:
        """The index over the collection's `count` rows (loaded or extended as needed)."""
        index = self.index_
        if index is not None and index.rows_ >= count and manifest_epoch == self._manifest_epoch:
            return index
        with self._lock:
            return self._current(docs, count, manifest_epoch)

    def _current(self, docs, count: int, manifest_epoch: int, *, from_disk: bool = True) -> LexicalIndex:
        index = self.index_
        if index is not None and index.rows_ >= count and manifest_epoch == self._manifest_epoch:
            return index
        epoch = docs.epoch()
        if epoch > manifest_epoch:  # SQLite is one compaction ahead of this process's rows: keep what matches them
            if index is not None and manifest_epoch == self._manifest_epoch:
                return index
            raise CollectionError(f"collection {self.path} is being compacted; lexical search works again in a moment")
        if index is None or index.epoch_ != epoch:
            index = (self._load(epoch) if from_disk else None) or LexicalIndex(epoch=epoch)
        if index.rows_ < count:
            start = time.perf_counter()
            rows, texts, read_at = docs.texts(index.rows_, count)
            if read_at != epoch:
                raise CollectionError(f"collection {self.path} is being compacted; lexical search works again "
                                      "in a moment")
            before = index.rows_
            index = index.extend(rows, texts, count)
            log.info("lexical index of %s: rows %d..%d tokenised (%d texts), BM25 rebuilt over %d documents in "
                     "%.2fs", self.path, before, count, len(texts), index.documents, time.perf_counter() - start)
        self.index_, self._manifest_epoch = index, manifest_epoch
        return index

    def _load(self, epoch: int) -> LexicalIndex | None:
        """The saved index if it is sound and numbered as at `epoch`; None (after a warning if damaged) otherwise."""
        for attempt in range(3):  # a writer may replace the folder while we read it
            folder = current_folder(self.path)
            if folder is None:
                return None
            try:
                index = LexicalIndex.load(folder)
            except CollectionError as exc:
                if attempt < 2 and not folder.exists():
                    continue
                log.warning("%s; lexical search rebuilds it from the texts in memory, `matsearch build %s` saves it",
                            exc, self.path)
                return None
            self.saved_ = (index.rows_, index.epoch_)
            return index if index.epoch_ == epoch else None
        return None

    def persist(self, docs, count: int, manifest_epoch: int, *, rebuild: bool = False) -> Path | None:
        """Writer: save the index over `count` rows unless the saved one already is it (or, with `rebuild`,
        build it afresh from the texts first); return the folder written, or None."""
        with self._lock:
            if rebuild:
                self.index_, self.saved_ = None, None
            index = self._current(docs, count, manifest_epoch, from_disk=not rebuild)
            for stale in self.path.glob(f"{PREFIX}.*.staging"):
                shutil.rmtree(stale, ignore_errors=True)
            if self.saved_ == (index.rows_, index.epoch_) and current_folder(self.path) is not None:
                return None
            latest = current_folder(self.path)
            name = f"{PREFIX}.{int(latest.name.split('.')[1]) + 1 if latest else 1}"
            staging = self.path / f"{name}.staging"
            index.save(staging)
            fsync_tree(staging)
            os.rename(staging, self.path / name)  # the commit point
            self.saved_ = (index.rows_, index.epoch_)
            for old in self.path.glob(f"{PREFIX}.*"):
                if old.name != name and old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
            return self.path / name

    def save_on_close(self, docs, count: int, manifest_epoch: int) -> None:
        """`persist`, for a closing writer: a failure (it is derived data) is logged, not raised."""
        try:
            self.persist(docs, count, manifest_epoch)
        except Exception as exc:  # noqa: BLE001 - a lost lexical index must not fail the close
            log.warning("collection %s: the lexical index was not saved (%s: %s); lexical search rebuilds it",
                        self.path, type(exc).__name__, exc)
