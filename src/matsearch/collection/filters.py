"""Metadata filters: a JSON condition on each item's metadata, parsed once into a small tree and
evaluated to a boolean row mask that the search honours.

Syntax (the operator style of MongoDB, Pinecone and Chroma)::

    {"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}, "$or": [{"draft": false}, {"score": {"$gt": 0.5}}]}

- keys of one object are ANDed; ``{"field": value}`` means ``{"field": {"$eq": value}}``;
- ``$eq $ne $gt $gte $lt $lte`` compare a field with a string, number or boolean (order comparisons
  take numbers or strings, strings by code point); ``$in $nin`` take a list of them; ``$exists``
  takes true or false; ``$not`` negates a field's operators (``{"year": {"$not": {"$gt": 2000}}}``)
  or, at the top, a whole filter; ``$and $or`` take a non-empty list of filters;
- a field holding a list matches when any element does (``{"tags": "ml"}``); ``$ne``/``$nin``/``$not``
  are the negations, so they also match items that lack the field;
- fields are top-level metadata keys; metadata values that are objects can only be tested by ``$exists``.

Errors (InvalidInputError, each naming the part at fault): malformed JSON, an unknown operator, an
operand of the wrong type (``{"$in": 5}``, ``{"$gt": true}``, null), a field that no item's metadata
holds (except under ``$exists``), or a value of a type the field never holds (``{"year": "2020"}``
where every year is a number).

Evaluation is columnar: the first filter that names a field reads that field of every stored row
from docs.sqlite once (SQLite's JSON functions, 0.2-0.5 s per 100k rows), into numpy arrays kept in
memory; after that a filter costs numpy comparisons over those arrays (0.2-0.4 ms per 100k rows,
where the same filter as an SQLite json_extract WHERE takes 40-120 ms). Rows added later are read on
their own; a metadata update in place (counted by a trigger in docs.sqlite) or a compaction makes the
fields be read again. The mask of each filter is cached per collection state. README: "Metadata filters".
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import CollectionError, InvalidInputError
from ..matryoshka import check_vectors
from ..results import Cost, SearchResult
from ..search import run_filtered, scans_rows
from . import hybrid

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not")
LOGICAL = ("$and", "$or", "$not")
OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$and", "$or", "$not")
_ORDER = ("$gt", "$gte", "$lt", "$lte")
_NUMBER, _STRING, _BOOL = "number", "string", "boolean"
_PLURAL = {_NUMBER: "numbers", _STRING: "strings", _BOOL: "booleans"}
_KIND_CODE = {int: 1, float: 1, str: 2, bool: 3}
_COMPARE = {"$gt": np.greater, "$gte": np.greater_equal, "$lt": np.less, "$lte": np.less_equal}
_PARSED = 256  # filters kept parsed, by their text
_MASKS = 16  # row masks kept, by filter and collection state
_SETTLE_TRIES = 40  # × 50 ms: how long a search waits for a compaction's files to arrive


# -- the tree ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    """`field` compared by `op` (a comparison operator other than $not) with `value`."""

    field: str
    op: str
    value: object


@dataclass(frozen=True)
class AllOf:
    parts: tuple


@dataclass(frozen=True)
class AnyOf:
    parts: tuple


@dataclass(frozen=True)
class Not:
    part: object


class Filter:
    """A parsed filter: `Filter.parse(spec)` with a dict or its JSON text; `key` is its canonical text."""

    def __init__(self, root, key: str):
        self.root, self.key = root, key

    @classmethod
    def parse(cls, spec) -> "Filter":
        if isinstance(spec, Filter):
            return spec
        if isinstance(spec, (str, bytes)):
            text = spec.decode() if isinstance(spec, bytes) else spec
            try:
                spec = json.loads(text, parse_constant=_reject_constant)
            except ValueError as exc:
                raise InvalidInputError(f"filter is not valid JSON ({exc}): {_excerpt(text)}") from None
        if not isinstance(spec, dict):
            raise InvalidInputError(f"a filter is a JSON object such as {{\"year\": {{\"$gte\": 2020}}}}, "
                                    f"got {type(spec).__name__} {_excerpt(spec)}")
        root = _parse_object(spec, "filter")
        try:
            key = json.dumps(spec, sort_keys=True, allow_nan=False)
            json.dumps(spec, ensure_ascii=False).encode()  # text SQLite can take: no lone surrogates
        except ValueError as exc:  # (UnicodeEncodeError is one)
            raise InvalidInputError(f"filter {_excerpt(spec)} is not JSON text: {exc}") from None
        return cls(root, key)

    @cached_property
    def fields(self) -> tuple[str, ...]:
        """The fields the filter names, in first-seen order."""
        found: dict[str, None] = {}
        _walk_fields(self.root, found)
        return tuple(found)

    def mask(self, columns: dict, count: int) -> np.ndarray:
        """Rows in [0, count) that match, from each named field's `FieldColumn`."""
        return _evaluate(self.root, columns, count)

    def __str__(self) -> str:
        return self.key

    def __repr__(self) -> str:
        return f"Filter({self.key})"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _excerpt(value, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr) if _jsonable(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value) -> bool:
    try:
        json.dumps(value, default=repr)
        return True
    except (TypeError, ValueError):
        return False


def _parse_object(spec: dict, where: str):
    """A filter object: its keys ANDed."""
    parts = []
    for key, value in spec.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"{where}: field names must be non-empty strings, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidInputError(f"{where}: {key} takes a non-empty list of filters, got {_excerpt(value)}")
            subs = []
            for n, item in enumerate(value):
                if not isinstance(item, dict):
                    raise InvalidInputError(f"{where}.{key}[{n}]: each entry is a filter object, got {_excerpt(item)}")
                subs.append(_parse_object(item, f"{where}.{key}[{n}]"))
            parts.append(AllOf(tuple(subs)) if key == "$and" else AnyOf(tuple(subs)))
        elif key == "$not":
            if not isinstance(value, dict) or not value:
                raise InvalidInputError(f"{where}: $not takes a non-empty filter object, got {_excerpt(value)}")
            parts.append(Not(_parse_object(value, f"{where}.$not")))
        elif key.startswith("$"):
            if key in OPERATORS:
                raise InvalidInputError(f"{where}: operator {key} compares a field; write {{\"field\": "
                                        f"{{\"{key}\": ...}}}}")
            raise InvalidInputError(f"{where}: unknown operator {key!r}; operators are {', '.join(OPERATORS)}")
        else:
            if '"' in key:
                raise InvalidInputError(f"{where}: field name {key!r} contains a double quote, which filters "
                                        "cannot name")
            parts.append(_parse_field(key, value, f"{where}.{key}"))
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _parse_field(field: str, value, where: str):
    """What a field must satisfy: a bare value ($eq) or an object of operators (ANDed)."""
    if not isinstance(value, dict):
        if isinstance(value, list):
            raise InvalidInputError(f"{where}: a list is not a value to compare with; to match any of several, "
                                    f"write {{\"$in\": {_excerpt(value)}}}")
        return Cond(field, "$eq", _scalar(value, where, "$eq"))
    if not value:
        raise InvalidInputError(f"{where}: empty operator object {{}}; write e.g. {{\"$eq\": ...}}")
    parts = []
    for op, operand in value.items():
        if not isinstance(op, str) or not op.startswith("$"):
            raise InvalidInputError(f"{where}: {op!r} is not an operator; metadata filters compare top-level "
                                    "fields with scalar values (nested objects are not searchable)")
        if op not in COMPARISONS:
            if op in LOGICAL:
                raise InvalidInputError(f"{where}: {op} combines filters, so it goes at the top of a filter object, "
                                        f"not under a field")
            raise InvalidInputError(f"{where}: unknown operator {op!r}; a field takes {', '.join(COMPARISONS)}")
        at = f"{where}.{op}"
        if op == "$not":
            if not isinstance(operand, dict):
                raise InvalidInputError(f"{at}: takes an object of operators, e.g. {{\"$not\": {{\"$gt\": 5}}}}, "
                                        f"got {_excerpt(operand)}")
            parts.append(Not(_parse_field(field, operand, at)))
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise InvalidInputError(f"{at}: takes true or false, got {_excerpt(operand)}")
            parts.append(Cond(field, op, operand))
        elif op in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise InvalidInputError(f"{at}: takes a list of values, got {_excerpt(operand)}")
            parts.append(Cond(field, op, tuple(_scalar(v, f"{at}[{n}]", op) for n, v in enumerate(operand))))
        else:
            scalar = _scalar(operand, at, op)
            if op in _ORDER and isinstance(scalar, bool):
                raise InvalidInputError(f"{at}: order comparisons take a number or a string, got {_excerpt(operand)}")
            parts.append(Cond(field, op, scalar))
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _scalar(value, where: str, op: str):
    if value is None:
        raise InvalidInputError(f"{where}: null is not a value filters compare with; to find items without the "
                                f"field use {{\"$exists\": false}}")
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"{where}: {value} is not a finite number")
        return value
    raise InvalidInputError(f"{where}: {op} takes a string, number or boolean, got {type(value).__name__} "
                            f"{_excerpt(value)}")


def _walk_fields(node, found: dict) -> None:
    if isinstance(node, Cond):
        found.setdefault(node.field)
    elif isinstance(node, Not):
        _walk_fields(node.part, found)
    else:
        for part in node.parts:
            _walk_fields(part, found)


def _kind(value) -> str:
    return _BOOL if isinstance(value, bool) else _STRING if isinstance(value, str) else _NUMBER


# -- evaluation ----------------------------------------------------------------------------------


def _evaluate(node, columns: dict, count: int) -> np.ndarray:
    if isinstance(node, Cond):
        return columns[node.field].match(node, count)
    if isinstance(node, Not):
        return ~_evaluate(node.part, columns, count)
    if not node.parts:
        return np.ones(count, dtype=bool)
    masks = iter(_evaluate(part, columns, count) for part in node.parts)
    out = next(masks)
    for mask in masks:
        out = np.logical_and(out, mask, out=out) if isinstance(node, AllOf) else np.logical_or(out, mask, out=out)
    return out


class _Values:
    """Typed scalars: numbers as float64 (NaN where not a number), strings as codes into the column's
    sorted vocabulary (-1 where not a string), booleans as 0/1 (-1 where not a boolean)."""

    def __init__(self):
        self.numbers = np.zeros(0, dtype=np.float64)
        self.codes = np.zeros(0, dtype=np.int32)
        self.bools = np.zeros(0, dtype=np.int8)

    def append(self, values: list, strings_at: np.ndarray, codes: np.ndarray) -> set[str]:
        """Add `values` (None where a row has no scalar), the strings already coded; return the kinds met."""
        kinds = np.array([_KIND_CODE.get(type(v), 0) for v in values], dtype=np.int8)
        numbers = np.full(len(values), np.nan)
        is_num = kinds == 1
        if is_num.any():
            numbers[is_num] = np.array(values, dtype=object)[is_num].astype(np.float64)
        bools = np.full(len(values), -1, dtype=np.int8)
        is_bool = kinds == 3
        bools[is_bool] = np.array(values, dtype=object)[is_bool].astype(np.int8)
        coded = np.full(len(values), -1, dtype=np.int32)
        coded[strings_at] = codes
        self.numbers = np.concatenate([self.numbers, numbers])
        self.codes = np.concatenate([self.codes, coded])
        self.bools = np.concatenate([self.bools, bools])
        return {kind for kind, code in ((_NUMBER, 1), (_STRING, 2), (_BOOL, 3)) if (kinds == code).any()}

    def recode(self, old_vocab: np.ndarray, vocab: np.ndarray) -> None:
        coded = self.codes >= 0
        self.codes[coded] = np.searchsorted(vocab, old_vocab[self.codes[coded]])

    def equal(self, kind: str, values: list, vocab: np.ndarray) -> np.ndarray:
        if kind == _NUMBER:
            return _any_of(self.numbers, np.array(sorted(set(values)), dtype=np.float64))
        if kind == _BOOL:
            return _any_of(self.bools, np.array(sorted({int(v) for v in values}), dtype=np.int8))
        at = np.searchsorted(vocab, values)
        found = sorted({int(a) for a, v in zip(at, values) if a < len(vocab) and vocab[a] == v})
        return _any_of(self.codes, np.array(found, dtype=np.int32))

    def ordered(self, op: str, value, vocab: np.ndarray) -> np.ndarray:
        if _kind(value) == _NUMBER:
            with np.errstate(invalid="ignore"):
                return _COMPARE[op](self.numbers, value)
        # strings: the vocabulary is sorted, so a comparison is a range of codes
        edge = int(np.searchsorted(vocab, value, side="right" if op in ("$gt", "$lte") else "left"))
        return self.codes >= edge if op in ("$gt", "$gte") else (self.codes >= 0) & (self.codes < edge)


def _any_of(values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """values ∈ wanted (sorted, unique), elementwise: a few comparisons, or a binary search for many."""
    if len(wanted) <= 4:
        out = np.zeros(len(values), dtype=bool)
        for w in wanted:
            out |= values == w
        return out
    at = np.minimum(np.searchsorted(wanted, values), len(wanted) - 1)
    return wanted[at] == values


class FieldColumn:
    """One metadata field of rows [0, `rows`), typed (`_Values`): each row's scalar value, one per row, and
    the scalar elements of rows whose value is a list (`items`, with their rows), matched as any-of; plus
    whether each row's metadata has the key at all (any value, null and objects included)."""

    def __init__(self, name: str):
        self.name = name
        self.rows = 0
        self.present = np.zeros(0, dtype=bool)
        self.scalars = _Values()  # one per row
        self.items = _Values()  # list elements
        self.item_rows = np.zeros(0, dtype=np.int64)
        self.vocab = np.zeros(0, dtype=str)
        self.kinds: set[str] = set()

    def extend(self, hi: int, present: np.ndarray, scalar_rows: np.ndarray, scalars: list, item_rows: np.ndarray,
               items: list) -> "FieldColumn":
        """Append rows [self.rows, hi): the `present` rows, the scalar value of `scalar_rows`, list elements."""
        lo = self.rows
        per_row = [None] * (hi - lo)
        for row, value in zip(scalar_rows.tolist(), scalars):
            per_row[row - lo] = value
        strings = [(n, v) for n, v in enumerate(per_row) if type(v) is str]
        item_strings = [(n, v) for n, v in enumerate(items) if type(v) is str]
        new = np.array([v for _, v in strings + item_strings], dtype=str)
        vocab = np.union1d(self.vocab, new) if len(new) else self.vocab
        if len(vocab) != len(self.vocab) and len(self.vocab):  # new strings: renumber the old codes
            self.scalars.recode(self.vocab, vocab)
            self.items.recode(self.vocab, vocab)
        self.vocab = vocab
        codes = np.searchsorted(vocab, new).astype(np.int32)
        self.kinds |= self.scalars.append(per_row, np.array([n for n, _ in strings], dtype=np.int64),
                                          codes[: len(strings)])
        self.kinds |= self.items.append(items, np.array([n for n, _ in item_strings], dtype=np.int64),
                                        codes[len(strings):])
        self.item_rows = np.concatenate([self.item_rows, item_rows])
        flags = np.zeros(hi - lo, dtype=bool)
        flags[present - lo] = True
        self.present = np.concatenate([self.present, flags])
        self.rows = hi
        return self

    def match(self, cond: Cond, count: int) -> np.ndarray:
        """Rows in [0, count) that satisfy `cond` (count ≤ self.rows)."""
        if cond.op == "$exists":
            hit = self.present[:count].copy()
            return hit if cond.value else ~hit
        self._check(cond)
        hit = self._hits(self.scalars, cond)[:count]
        if len(self.item_rows):
            items = self._hits(self.items, cond)
            rows = self.item_rows[items]
            hit[rows[rows < count]] = True
        return ~hit if cond.op in ("$ne", "$nin") else hit

    def _hits(self, values: _Values, cond: Cond) -> np.ndarray:
        if cond.op in _ORDER:
            return values.ordered(cond.op, cond.value, self.vocab)
        wanted = cond.value if cond.op in ("$in", "$nin") else (cond.value,)
        hit = np.zeros(len(values.numbers), dtype=bool)
        for kind in {_kind(v) for v in wanted}:
            hit |= values.equal(kind, [v for v in wanted if _kind(v) == kind], self.vocab)
        return hit

    def _check(self, cond: Cond) -> None:
        where = f"filter field {self.name!r}"
        if not self.present.any():
            raise InvalidInputError(f"{where}: no item's metadata has this field (check the name; "
                                    f"{{\"$exists\": false}} asks for items without it)")
        values = cond.value if cond.op in ("$in", "$nin") else (cond.value,)
        held = " and ".join(_PLURAL[k] for k in sorted(self.kinds)) or "no strings, numbers or booleans"
        for value in values:
            if _kind(value) not in self.kinds:
                raise InvalidInputError(f"{where} holds {held}, so {cond.op} {json.dumps(value)} "
                                        f"(a {_kind(value)}) can never match: a type mismatch")


# -- reading fields from docs.sqlite ---------------------------------------------------------------


def read_field(docs, name: str, lo: int, hi: int):
    """Field `name` of rows [lo, hi) from the document database, in one transaction: the rows that have the
    key, the rows holding a scalar and those scalars, the rows of list elements and those elements (nulls,
    objects and nested lists left out), and the epoch of that row numbering."""
    found, epoch = docs.metadata_field(f'$."{name}"', lo, hi)
    present, scalar_rows, scalars, item_rows, items = [], [], [], [], []
    for row, kind, value in found:
        present.append(row)
        if kind in ("integer", "real", "text"):
            scalar_rows.append(row)
            scalars.append(value)
        elif kind in ("true", "false"):
            scalar_rows.append(row)
            scalars.append(kind == "true")
        elif kind == "array":
            for item in json.loads(value):
                if item is not None and not isinstance(item, (dict, list)):
                    item_rows.append(row)
                    items.append(item)
    as_rows = lambda rows: np.array(rows, dtype=np.int64)  # noqa: E731
    return as_rows(present), as_rows(scalar_rows), scalars, as_rows(item_rows), items, epoch


# -- the collection's cache ------------------------------------------------------------------------


class Selection:
    """The rows a filter lets a search see: `allowed`, one bool per stored row (live and matching), and
    their `count`; `rows` and `excluded` made when first asked for. Shared by searches: read only."""

    def __init__(self, allowed: np.ndarray, count: int):
        self.allowed, self.count = allowed, count

    @cached_property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.allowed)

    @cached_property
    def excluded(self) -> np.ndarray:
        return ~self.allowed


class Renumbered(CollectionError):
    """docs.sqlite is one compaction ahead of this process's state: a moment's state, retried."""


class FilterCache:
    """A collection's parsed filters, field columns and recent masks; shared by its threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._parsed: OrderedDict = OrderedDict()
        self._columns: dict[str, FieldColumn] = {}
        self._state = None  # (epoch, metadata version) the columns were read at
        self._seen = None  # the collection's commit mark when the state was last checked
        self._masks: OrderedDict = OrderedDict()

    def parse(self, spec) -> Filter:
        if isinstance(spec, Filter):
            return spec
        key = spec if isinstance(spec, str) else None
        with self._lock:
            found = self._parsed.get(key) if key is not None else None
            if found is not None:
                self._parsed.move_to_end(key)
                return found
        parsed = Filter.parse(spec)
        if key is not None:
            with self._lock:
                self._parsed[key] = parsed
                while len(self._parsed) > _PARSED:
                    self._parsed.popitem(last=False)
        return parsed

    def select(self, col, flt: Filter) -> Selection:
        """The rows `flt` lets a search of `col` see, in the state `col` holds now (call under its read lock)."""
        count = col._store.count
        key = (flt.key, col._seen, col.manifest.epoch, count, col._n_dead)
        with self._lock:
            cached = self._masks.get(key)
            if cached is not None:
                self._masks.move_to_end(key)
                return cached
            self._bring_up_to_date(col, flt.fields, count)
            allowed = flt.mask(self._columns, count)
            if col._n_dead:
                allowed &= ~col._dead[:count]
            selection = self._masks[key] = Selection(allowed, int(np.count_nonzero(allowed)))
            while len(self._masks) > _MASKS:
                self._masks.popitem(last=False)
        return selection

    def _bring_up_to_date(self, col, fields, count: int) -> None:
        docs = col._docs
        if col._seen != self._seen:
            state = (col.manifest.epoch, docs.metadata_version())
            if state != self._state or state[1] is None:  # renumbered, or metadata rewritten in place
                self._columns = {}
                self._masks.clear()
            self._state, self._seen = state, col._seen
        for name in fields:
            column = self._columns.get(name)
            if column is not None and column.rows > count:  # should not happen within an epoch
                column = None
            if column is None or column.rows < count:
                column = column or FieldColumn(name)
                *values, epoch = read_field(docs, name, column.rows, count)
                if epoch != col.manifest.epoch:
                    raise Renumbered(f"collection {col.path} is being compacted; search again in a moment")
                self._columns[name] = column.extend(count, *values)


# -- filtered search ---------------------------------------------------------------------------------


def search(col, queries, *, k, plan, mode, fusion, query_vectors, filter) -> SearchResult:
    """`Collection.search` with a filter: dense searches here, lexical and hybrid ones in hybrid.py,
    each seeing only the live rows the filter matches. With fewer than k matching items every query
    gets all of them: the result has that many columns (none when nothing matches)."""
    flt = col._filters.parse(filter)
    _check_k(k)
    plain = fusion is None and query_vectors is None
    if plain and (mode == "dense" or (mode is None and not hybrid.is_text(queries))):
        return _dense(col, col._encoded(queries), k, plan, flt)
    return hybrid.search(col, queries, k=k, plan=plan, mode=mode, fusion=fusion, query_vectors=query_vectors,
                         filter=flt)


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k={k!r} is out of range: it must be a whole number of at least 1 (a filtered "
                                "search returns all the matching items when fewer than k match)")


def _dense(col, queries, k: int, plan, flt: Filter) -> SearchResult:
    col._sync()
    raw = check_vectors(queries, col.manifest.dim, what="queries")
    for attempt in range(_SETTLE_TRIES):
        start = time.perf_counter()
        with col._rw.reading():
            store, run, index = col._ready(plan)
            try:
                chosen = col._filters.select(col, flt)
            except Renumbered:
                if attempt == _SETTLE_TRIES - 1:
                    raise
                chosen = None
            if chosen is not None:
                return _run(col, store, raw, run, min(k, chosen.count), chosen, index, start)
        time.sleep(0.05)
        col._sync()


def _run(col, store, raw, plan, k: int, chosen: Selection, index, start: float) -> SearchResult:
    """Under the read lock: the plan over the rows `chosen` lets through, ids looked up."""
    queries = col._transform.apply(raw)
    if k == 0:
        cost = Cost(queries=len(queries), candidates=[0], stage_seconds=[0.0])
        result = SearchResult(ids=np.empty((len(queries), 0), dtype=object),
                              scores=np.empty((len(queries), 0), dtype=np.float32), plan=str(plan), cost=cost)
    else:
        def search():
            scan = scans_rows(plan, chosen.count, store.count)
            return run_filtered(store, queries, plan, k, col.manifest.metric, chosen.allowed, chosen.count, index,
                                rows=chosen.rows if scan else None, excluded=None if scan else chosen.excluded)

        result = col._answered(search)
    result.cost.matched = chosen.count
    result.cost.seconds = time.perf_counter() - start  # the mask (or its cache) included
    return result
