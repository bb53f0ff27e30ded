"""Recipes: what a collection builds besides its stored vectors, as a short string.

A recipe is a comma-separated list of indexes; ``flat`` (the default) builds none.

- ``ivf<lists>@d<dc>:d<ds>``: IVF with `lists` k-means centroids on the dc-dim
  prefix and a list-ordered copy of the prefix up to ds dims, which a query
  scans at any nesting dim up to ds (plans ``p<probe>@d<dims>:<keep>``).
  ``ivf1024@d64+d32:d128`` adds a centroid set at 32 dims (each list's mean) to
  probe with (plans ``p<probe>c32@…``); a suffix ``/f16``, ``/int8``,
  ``/pq<bytes>`` or ``/pq<sub-spaces>x4fs`` keeps the lists as codes of the
  ds-prefix instead (ds then any dim, not only a nesting one), scanned at ds only
  (``ivf1024@d64:d128/pq32`` is IVF-PQ on the 128-dim prefix; ``/pq64x4fs`` its
  4-bit fast-scan form, 32 bytes).
- ``hnsw<neighbors>@d<dim>``: an HNSW graph on the dim-prefix (plans
  ``g<beam>@d<dim>:<keep>``); ``hnsw<neighbors>@d<db>:d<dim>`` links it on the
  shorter db-prefix, and a suffix ``/f16`` or ``/int8`` stores its copy of the
  prefix at 2 or 1 bytes per dim (``hnsw32@d96:d192/int8``).
- ``pq<bytes>@d<dim>`` / ``opq<bytes>@d<dim>``: PQ codes (with an OPQ rotation)
  of the dim-prefix (plans ``q@d<dim>:<keep>``).
- ``bin<bits>``: learned binary codes of `bits` bits, bits/8 bytes per item in RAM
  (plans ``h@b<bits>:<keep>>d<dims>…``, re-ranked from the memory-mapped store);
  ``bin<bits>/itq`` and ``bin<bits>/sign`` code with ITQ or the prefix's sign bits;
  ``bin<bits>+ivf<lists>@d<dc>`` also groups the rows in k-means lists on the dc-prefix
  (binary IVF, 4 more bytes per item; plans ``h<probe>@b<bits>:<keep>>…``), and
  ``+int8@d<dim>`` / ``+f16@d<dim>`` holds a copy of a prefix in RAM to re-rank the
  Hamming shortlist before the store is read (plans ``h@b64:2000>d32/int8:200>d384``).

``describe(parse(s)) == s`` for a canonical string, and `bytes_per_vector`
tells the memory a recipe will hold before anything is built.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import InvalidInputError
from .index import BinaryIndex, GraphIndex, IVFIndex, PQIndex
from .index.graph import CODECS
from .index.ivf_lists import code_bytes, pq_spec
from .quantize.binary import words_for

_IVF = re.compile(r"ivf(?P<lists>[1-9][0-9]*)@d(?P<dc>[1-9][0-9]*)(?P<probe>(?:\+d[1-9][0-9]*)*):d(?P<ds>[1-9][0-9]*)"
                  r"(?:/(?P<codec>f16|int8|pq[1-9][0-9]*(?:x4fs)?))?")
_HNSW = re.compile(r"hnsw(?P<neighbors>[1-9][0-9]*)@(?:d(?P<build_dim>[1-9][0-9]*):)?d(?P<dim>[1-9][0-9]*)"
                   r"(?:/(?P<codec>f16|int8))?")
_PQ = re.compile(r"(?P<opq>o?)pq(?P<bytes>[1-9][0-9]*)@d(?P<dim>[1-9][0-9]*)")
_BIN = re.compile(r"bin(?P<bits>[1-9][0-9]*)(?:/(?P<method>itq|sign))?(?:\+ivf(?P<lists>[1-9][0-9]*)@d(?P<dc>[1-9][0-9]*))?"
                  r"(?:\+(?P<copy>int8|f16)@d(?P<copy_dim>[1-9][0-9]*))?")


@dataclass(frozen=True)
class IVFPart:
    lists: int
    centroid_dim: int
    scan_dim: int
    probe_dims: tuple[int, ...] = ()
    codec: str = "f32"
    kind = "p"
    file = "ivf.npz"

    def __str__(self) -> str:
        probes = "".join(f"+d{d}" for d in sorted(set(self.probe_dims) - {self.centroid_dim}))
        codec = "" if self.codec == "f32" else f"/{self.codec}"
        return f"ivf{self.lists}@d{self.centroid_dim}{probes}:d{self.scan_dim}{codec}"

    def make(self, metric: str = "cosine") -> IVFIndex:
        return IVFIndex(n_lists=self.lists, centroid_dim=self.centroid_dim, scan_dim=self.scan_dim,
                        probe_dims=self.probe_dims, codec=self.codec, metric=metric)

    def bytes_per_vector(self, count: int, nesting: list[int]) -> float:
        centroids = 4 * self.lists * (self.centroid_dim + sum(set(self.probe_dims) - {self.centroid_dim}))
        if self.codec == "f32":
            norms = 4 * sum(1 for d in nesting if d <= self.scan_dim)
            return 4 * self.scan_dim + 8 + norms + (centroids + 8 * (self.lists + 1)) / count
        spec = pq_spec(self.codec)
        tables = 4 * self.scan_dim * (2 ** spec[1] if spec else 2)
        codes = code_bytes(self.codec, self.scan_dim)
        padding = 16 * codes * self.lists if spec and spec[1] == 4 else 0  # fast scan: half a block of 32 per list
        return codes + 8 + (centroids + 4 * self.lists * self.scan_dim + tables + padding) / count


@dataclass(frozen=True)
class GraphPart:
    neighbors: int
    dim: int
    build_dim: int | None = None
    codec: str = "f32"
    kind = "g"
    file = "hnsw.faiss"

    def __str__(self) -> str:
        built = "" if self.build_dim in (None, self.dim) else f"d{self.build_dim}:"
        return f"hnsw{self.neighbors}@{built}d{self.dim}" + ("" if self.codec == "f32" else f"/{self.codec}")

    def make(self, metric: str = "cosine") -> GraphIndex:
        return GraphIndex(dim=self.dim, neighbors=self.neighbors, metric=metric, build_dim=self.build_dim,
                          codec=self.codec)

    def bytes_per_vector(self, count: int, nesting: list[int]) -> float:
        # faiss HNSW: 2M links on level 0, M on each upper level (expected 1/ln M of them), offsets, levels
        upper = self.neighbors / math.log(self.neighbors)
        return CODECS[self.codec] * self.dim + 4 * (2 * self.neighbors + upper) + 8 + 4


@dataclass(frozen=True)
class PQPart:
    code_bytes: int
    dim: int
    opq: bool = False
    kind = "q"
    file = "pq.faiss"

    def __str__(self) -> str:
        return f"{'o' if self.opq else ''}pq{self.code_bytes}@d{self.dim}"

    def make(self, metric: str = "cosine") -> PQIndex:
        return PQIndex(dim=self.dim, code_bytes=self.code_bytes, opq=self.opq, metric=metric)

    def bytes_per_vector(self, count: int, nesting: list[int]) -> float:
        return self.code_bytes + (256 * self.dim * 4 + (self.dim * self.dim * 4 if self.opq else 0)) / count


@dataclass(frozen=True)
class BinaryPart:
    bits: int
    method: str = "learned"
    lists: int | None = None
    centroid_dim: int | None = None
    copy: tuple[str, int] | None = None
    kind = "h"
    file = "codes.npz"

    def __str__(self) -> str:
        ivf = "" if self.lists is None else f"+ivf{self.lists}@d{self.centroid_dim}"
        copy = "" if self.copy is None else f"+{self.copy[0]}@d{self.copy[1]}"
        return f"bin{self.bits}" + ("" if self.method == "learned" else f"/{self.method}") + ivf + copy

    def make(self, metric: str = "cosine") -> BinaryIndex:
        return BinaryIndex(bits=self.bits, method=self.method, metric=metric, lists=self.lists,
                           centroid_dim=self.centroid_dim, copy=self.copy)

    def bytes_per_vector(self, count: int, nesting: list[int]) -> float:
        input_dim = {"learned": min(2 * self.bits, nesting[-1]), "itq": self.bits, "sign": 0}[self.method]
        lists = 0 if self.lists is None else 4 + (4 * self.lists * self.centroid_dim + 8 * (self.lists + 1)) / count
        copy = 0 if self.copy is None else CODECS[self.copy[0]] * self.copy[1] + 8 * self.copy[1] / count
        return 8 * words_for(self.bits) + 4 * input_dim * (self.bits + 1) / count + lists + copy


INDEX_FILES = (IVFPart.file, GraphPart.file, PQPart.file, BinaryPart.file)


@dataclass(frozen=True)
class Recipe:
    """The indexes a collection builds, at most one of each kind."""

    parts: tuple = ()

    @classmethod
    def parse(cls, text: str) -> "Recipe":
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"recipe must be a non-empty string like 'hnsw32@d96', got {text!r}")
        if text.strip() == "flat":
            return cls()
        parts = []
        for item in text.split(","):
            item = item.strip()
            if match := _IVF.fullmatch(item):
                probes = tuple(int(d) for d in match["probe"].split("+d")[1:])
                parts.append(IVFPart(int(match["lists"]), int(match["dc"]), int(match["ds"]), probes,
                                     match["codec"] or "f32"))
            elif match := _HNSW.fullmatch(item):
                build_dim = None if match["build_dim"] is None else int(match["build_dim"])
                parts.append(GraphPart(int(match["neighbors"]), int(match["dim"]), build_dim, match["codec"] or "f32"))
            elif match := _PQ.fullmatch(item):
                parts.append(PQPart(int(match["bytes"]), int(match["dim"]), bool(match["opq"])))
            elif match := _BIN.fullmatch(item):
                lists, centroid_dim = (None if match[g] is None else int(match[g]) for g in ("lists", "dc"))
                copy = None if match["copy"] is None else (match["copy"], int(match["copy_dim"]))
                parts.append(BinaryPart(int(match["bits"]), match["method"] or "learned", lists, centroid_dim, copy))
            else:
                raise InvalidInputError(
                    f"malformed recipe {text!r}: {item!r} is not 'flat', 'ivf<lists>@d<dc>[+d<dc>…]:d<ds>[/f16|/int8|/pq<bytes>|/pq<M>x4fs]', 'hnsw<M>@[d<db>:]d<dim>[/f16|/int8]', '[o]pq<bytes>@d<dim>' or 'bin<bits>[/itq|/sign][+ivf<lists>@d<dc>][+int8|+f16@d<dim>]'"
                )
        kinds = [p.kind for p in parts]
        if len(set(kinds)) != len(kinds):
            raise InvalidInputError(f"recipe {text!r} names two indexes of one kind")
        return cls(tuple(parts))

    def check(self, dim: int, nesting: list[int]) -> "Recipe":
        """Raise unless every part fits vectors of `dim` dims with this nesting; return self."""
        for part in self.parts:
            if isinstance(part, IVFPart):
                if (part.codec == "f32" and part.scan_dim not in nesting) \
                        or max((part.centroid_dim, *part.probe_dims, part.scan_dim)) > dim:
                    raise InvalidInputError(
                        f"recipe part {part}: the scan dim must be one of the nesting dims {nesting} (float32 "
                        f"lists; coded lists any dim up to {dim}) and the centroid dims at most {dim}"
                    )
                if pq_spec(part.codec) and part.scan_dim % pq_spec(part.codec)[0]:
                    raise InvalidInputError(f"recipe part {part}: the scan dim must be a multiple of the PQ sub-spaces")
            elif isinstance(part, BinaryPart):
                if part.bits > dim:
                    raise InvalidInputError(f"recipe part {part}: {part.bits} bits need at least {part.bits} dims, "
                                            f"the vectors have {dim}")
                if part.copy is not None and part.copy[1] > dim:
                    raise InvalidInputError(f"recipe part {part}: the copied prefix d{part.copy[1]} exceeds the "
                                            f"vectors' {dim} dims")
                if (part.centroid_dim or 0) > dim:
                    raise InvalidInputError(f"recipe part {part}: centroid dim {part.centroid_dim} exceeds the "
                                            f"vectors' {dim}")
            elif part.dim > dim:
                raise InvalidInputError(f"recipe part {part}: dim {part.dim} exceeds the vectors' {dim}")
            elif isinstance(part, GraphPart) and (part.build_dim or 0) > part.dim:
                raise InvalidInputError(f"recipe part {part}: the build dim must not exceed the graph's dim")
            elif isinstance(part, PQPart) and part.dim % part.code_bytes:
                raise InvalidInputError(f"recipe part {part}: the dim must be a multiple of the code bytes")
        return self

    def bytes_per_vector(self, count: int, nesting: list[int]) -> float:
        """RAM the recipe's indexes will hold per stored vector (before building)."""
        return sum(p.bytes_per_vector(max(count, 1), nesting) for p in self.parts)

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.parts) or "flat"
