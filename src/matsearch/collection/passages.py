"""Long documents as passages: token-aware chunking at ingest, one result per document at search.

`Chunker` cuts each document's text into windows of `tokens` tokens of the collection's own
encoder (its tokenizer, special tokens aside), consecutive windows sharing `overlap` tokens;
each passage keeps the exact characters of the text it covers. A document becomes items
``<id>#0``, ``<id>#1``, … whose metadata is the document's plus ``parent`` (its id) and
``chunk`` (n). `search_parents` runs a search over the passages and returns each parent once,
scored by its best passage.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..data.sources import Batch
from ..errors import InvalidInputError
from ..results import Cost, SearchResult

PARENT, CHUNK = "parent", "chunk"  # metadata keys of a passage


class Chunker:
    """Splits a batch's texts into passages of at most `tokens` tokens of `encoder`'s tokenizer."""

    def __init__(self, *, encoder, tokens: int, overlap: int = 0):
        for name, value in (("tokens", tokens), ("overlap", overlap)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(f"chunk {name} must be a non-negative integer, got {value!r}")
        if tokens < 1 or overlap >= tokens:
            raise InvalidInputError(f"chunks need at least 1 token and an overlap below their length, got tokens="
                                    f"{tokens}, overlap={overlap}")
        self.encoder, self.tokens, self.overlap = encoder, tokens, overlap

    def split(self, batch: Batch) -> Batch:
        """The batch's documents as passages (a batch of items; `documents` counts the rows it came from)."""
        model = self.encoder._load()
        room = model.max_seq_length - 2  # [CLS] and [SEP]
        if self.tokens > room:
            raise InvalidInputError(f"chunks of {self.tokens} tokens are longer than the model "
                                    f"{self.encoder.model!r} reads ({room} tokens): it would cut every passage")
        spans = model.tokenizer(batch.texts, add_special_tokens=False, return_offsets_mapping=True,
                                verbose=False)["offset_mapping"]
        ids, texts, metadata = [], [], []
        for doc_id, text, meta, offsets in zip(batch.ids, batch.texts, batch.metadata, spans):
            starts = [j == 0 or offsets[j][0] > offsets[j - 1][1] for j in range(len(offsets))]
            for n, (lo, hi) in enumerate(self.windows(len(offsets), starts)):
                ids.append(f"{doc_id}#{n}")
                texts.append(text[offsets[lo][0] : offsets[hi - 1][1]] if offsets else text)
                metadata.append({**(meta or {}), PARENT: doc_id, CHUNK: n})
        return Batch(batch.start, ids, texts, metadata, None, batch.where, documents=len(batch))

    def windows(self, n: int, starts: list[bool] | None = None) -> list[tuple[int, int]]:
        """Token ranges [lo, hi) covering n tokens (one, possibly empty, when n fits). With `starts` (whether
        each token begins a word, i.e. follows whitespace), windows begin and end at word boundaries where
        a word fits, so that a passage's text tokenises to the very tokens it was cut from."""
        def start(j: int) -> bool:
            return starts is None or j >= n or starts[j]

        spans, lo = [], 0
        while True:
            hi = min(lo + self.tokens, n)
            cut = next((h for h in range(hi, lo, -1) if start(h)), hi)  # the last word boundary that fits
            spans.append((lo, cut))
            if cut >= n:
                return spans
            # the next window starts at a word up to `overlap` tokens back, if it then reaches past this one
            lo = next((j for j in range(max(cut - self.overlap, lo + 1), cut) if start(j) and
                       any(start(h) for h in range(cut + 1, min(j + self.tokens, n) + 1))), cut)


def search_parents(col, queries, *, k: int = 10, **options) -> SearchResult:
    """`col.search(queries, k=…, **options)` with each parent document once, at its best passage's rank and
    score. Searches k·4 passages first and more while a query has found fewer than k parents; a query
    whose collection holds fewer than k parents ends in None ids scored -inf. The cost sums every round;
    the result's `passages` are the best passages' ids."""
    live = len(col)
    fetch, cost = min(live, 4 * k), None
    while True:
        result = col.search(queries, k=fetch, **options)
        cost = result.cost if cost is None else _summed(cost, result.cost)
        ids, scores, best = _best_parents(col, result, k)
        if fetch >= live or all(row[-1] is not None for row in ids):
            break
        fetch = min(live, 4 * fetch)
    return SearchResult(ids=ids, scores=scores, plan=result.plan, cost=cost, mode=result.mode, target=result.target,
                        passages=best)


def _best_parents(col, result: SearchResult, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(parent ids, their scores, their best passages' ids), (queries × k) each, from a search of passages."""
    found = [i for i in dict.fromkeys(result.ids.ravel().tolist()) if i is not None]
    parent = {r.id: (r.metadata or {}).get(PARENT, r.id) for r in col.get(found)} if found else {}
    ids = np.full((len(result.ids), k), None, dtype=object)
    passages = np.full((len(result.ids), k), None, dtype=object)
    scores = np.full((len(result.ids), k), -np.inf, dtype=np.float32)
    for q, (row, row_scores) in enumerate(zip(result.ids.tolist(), result.scores.tolist())):
        best: dict[str, tuple[str, float]] = {}
        for item, score in zip(row, row_scores):
            if item is not None and parent[item] not in best:
                best[parent[item]] = item, score
                if len(best) == k:
                    break
        ids[q, : len(best)] = list(best)
        passages[q, : len(best)] = [item for item, _ in best.values()]
        scores[q, : len(best)] = [score for _, score in best.values()]
    return ids, scores, passages


def _summed(a: Cost, b: Cost) -> Cost:
    """Two rounds' work; candidates per stage are the last round's."""
    return replace(b, multiply_adds=a.multiply_adds + b.multiply_adds, bytes_read=a.bytes_read + b.bytes_read,
                   stage_seconds=[x + y for x, y in zip(a.stage_seconds, b.stage_seconds)] or b.stage_seconds,
                   lists_probed=a.lists_probed + b.lists_probed, items_scanned=a.items_scanned + b.items_scanned,
                   seconds=a.seconds + b.seconds)
