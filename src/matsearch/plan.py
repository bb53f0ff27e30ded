"""Funnel plans: what a query does, written as a short string that round-trips.

Notation: stages separated by ``>``, each ``d<dims>:<keep>``; the last stage has
no keep and returns the query's k.  ``d32:400>d128:100>d384`` scores every item
on the 32-dim prefix and keeps the best 400, re-scores those on 128 dims and keeps
100, and ranks those on all 384 dims.  ``d384`` alone is exact search.  A stage
never keeps fewer than k candidates: with k=50, ``d32:20>d384`` keeps 50.

The first stage may ask an index for candidates instead of scanning everything:
``p16@d64:400>d384`` scores only the items of the 16 IVF lists whose centroids are
nearest the query, on their 64-dim prefix, keeps 400 and ranks them on 384 dims
(``p16c32@d64:400>d384`` picks those lists with the index's 32-dim centroid set;
``p8-64~0.3@d192:100>d384`` probes, per query, the lists whose centroid is within a cosine of
0.3 of the nearest one's, at least 8 and at most 64: fewer for a query close to one list;
``p8-128^0.4@d192:100>d384`` opens the 128 nearest fast-scan lists nearest first, at least 8, and stops
when its shortlist already clears the next list by the margin 0.4 (see ivf.py: fewer lists for a query
whose neighbours are found early);
``g64@d96:100>d384`` walks a graph built on the 96-dim prefix with a search
beam (efSearch) of 64, keeps its 100 nearest and ranks them on 384 dims;
``q@d128:200>d384`` ranks every item by its PQ code of the 128-dim prefix;
``h@b128:1000>d384`` ranks every item by the Hamming distance of its 128-bit
binary code (``b`` counts bits, not dims) and re-ranks the nearest 1,000 on
384 dims (``h32@b128:1000>d384`` scans only the codes of the 32 nearest lists of
a binary IVF). Codes only shortlist: a code stage is followed by a float stage at any dims,
or by a stage on the codes' int8/float16 prefix copy in RAM: ``h@b64:2000>d32/int8:200>d384``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property

from .errors import InvalidInputError

INDEX_KINDS = {"p": "an IVF index", "g": "a graph index", "q": "PQ codes", "h": "binary codes"}
_STAGE = re.compile(r"(?:(?P<index>[pgqh])(?:(?P<least>[1-9][0-9]*)-)?(?P<effort>[1-9][0-9]*)?"
                    r"(?:~(?P<spread>[0-9]*\.?[0-9]+)|\^(?P<margin>-?[0-9]*\.?[0-9]+))?(?:c(?P<probe_dim>[1-9][0-9]*))?@)?"
                    r"(?P<unit>[db])(?P<dim>[1-9][0-9]*)(?:/(?P<codec>int8|f16))?(?::(?P<keep>[1-9][0-9]*))?")
COPY_CODECS = ("int8", "f16")


@dataclass(frozen=True)
class Stage:
    """Score the current candidates on a `dim`-prefix and keep the best `keep`.

    With `index` ("p": IVF, "g": graph, "q": PQ codes, "h": binary codes) the
    candidates come from that index, searched with `effort` (lists probed, or the
    graph's search beam); an IVF stage may name the `probe_dim` of the centroid set
    it probes with. For binary codes `dim` is the code's bits. With `codec`
    ("int8", "f16") the stage scores with the binary index's copy of its prefix in RAM.
    """

    dim: int
    keep: int | None = None
    index: str | None = None
    effort: int | None = None
    probe_dim: int | None = None
    codec: str | None = None
    spread: float | None = None  # IVF, per query: only lists within this cosine of the nearest one…
    least: int | None = None  # …but at least this many (and at most `effort`)
    margin: float | None = None  # IVF fast scan, per query: stop opening lists past `least` by this margin

    def __post_init__(self):
        for name, value in (("dim", self.dim), ("keep", self.keep), ("effort", self.effort),
                            ("probe_dim", self.probe_dim)):
            if value is None and name != "dim":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"stage {name} must be a positive integer, got {value!r}")
        if (self.index not in (None, *INDEX_KINDS) or (self.index in ("p", "g") and self.effort is None)
                or (self.index in (None, "q") and self.effort is not None)):
            raise InvalidInputError(f"stage index must be 'p' or 'g' with an effort, or 'q' or 'h' without one; "
                                    f"got {self.index!r} and {self.effort!r}")
        if self.codec not in (None, *COPY_CODECS) or (self.codec is not None and self.index is not None):
            raise InvalidInputError(f"stage codec must be one of {COPY_CODECS} on a stage without an index, "
                                    f"got {self.codec!r}")
        if self.probe_dim is not None and self.index != "p":
            raise InvalidInputError(f"only an IVF stage ('p') probes with a centroid dim, got {self.index!r}")
        if self.spread is not None and self.margin is not None:
            raise InvalidInputError(f"an IVF stage probes by a spread or stops by a margin, not both; got spread "
                                    f"{self.spread!r} and margin {self.margin!r}")
        if (self.spread is None and self.margin is None) != (self.least is None) or (self.least is not None and (
                self.index != "p" or not 1 <= self.least <= self.effort)):
            raise InvalidInputError(f"an adaptive probe is 'p<least>-<most>~<spread>@…' or 'p<least>-<most>^<margin>@…' "
                                    f"on an IVF stage with 1 <= least <= most, got least {self.least!r}, most "
                                    f"{self.effort!r}")
        if self.spread is not None and not 0 < self.spread < 2:
            raise InvalidInputError(f"an adaptive probe's spread is a cosine gap in (0, 2), got {self.spread!r}")
        if self.margin is not None and not -2 < self.margin < 2:
            raise InvalidInputError(f"an adaptive probe's stopping margin is a score gap in (-2, 2), got {self.margin!r}")

    def __str__(self) -> str:
        probe = "" if self.probe_dim is None else f"c{self.probe_dim}"
        adaptive = "" if self.spread is None else f"~{self.spread:g}"
        adaptive += "" if self.margin is None else f"^{self.margin:g}"
        least = "" if self.least is None else f"{self.least}-"
        via = "" if self.index is None else f"{self.index}{least}{self.effort or ''}{adaptive}{probe}@"
        size = f"{via}{'b' if self.index == 'h' else 'd'}{self.dim}" + (f"/{self.codec}" if self.codec else "")
        return size if self.keep is None else f"{size}:{self.keep}"


@dataclass(frozen=True)
class Plan:
    """A funnel of stages with strictly increasing dims and shrinking shortlists."""

    stages: tuple[Stage, ...]

    def __post_init__(self):
        if not self.stages:
            raise InvalidInputError("a plan needs at least one stage")
        *shortlists, last = self.stages
        if last.index == "h":
            example = f"{replace(last, keep=last.keep or 1000)}>d384"
            raise InvalidInputError(f"plan {self}: binary codes only shortlist; re-rank their candidates on "
                                    f"float dims, e.g. '{example}'")
        if last.keep is not None:
            raise InvalidInputError(f"plan {self}: the last stage returns k items and takes no ':keep'")
        for n, stage in enumerate(self.stages):
            if stage.codec and (n == 0 or self.stages[n - 1].index != "h" or stage is last):
                raise InvalidInputError(f"plan {self}: a '/{stage.codec}' stage re-ranks a binary-code shortlist "
                                        f"from the codes' prefix copy, so it follows 'h@b<bits>:<keep>' and is not last")
        for stage in shortlists:
            if stage.keep is None:
                raise InvalidInputError(f"plan {self}: stage {stage} needs ':keep' (only the last stage has none)")
        for stage in self.stages[1:]:
            if stage.index is not None:
                raise InvalidInputError(f"plan {self}: only the first stage can use an index ({stage})")
        for a, b in zip(self.stages, self.stages[1:]):
            if a.index == "h" or a.codec:  # bits, or approximate scores: the next stage's products start afresh
                continue
            if b.dim < a.dim or (b.dim == a.dim and a.index is None):
                raise InvalidInputError(f"plan {self}: stage dims must increase, got {a.dim} then {b.dim} "
                                        "(only an index's candidates may be re-scored at the same dims)")
        for a, b in zip(shortlists, shortlists[1:]):
            if b.keep >= a.keep:
                raise InvalidInputError(f"plan {self}: shortlists must shrink, got {a.keep} then {b.keep}")

    @classmethod
    def parse(cls, text: str) -> "Plan":
        """Parse a plan string such as ``d32:400>d384``."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"plan must be a non-empty string like 'd32:400>d384', got {text!r}")
        stages = []
        for part in text.split(">"):
            match = _STAGE.fullmatch(part.strip())
            if match is None:
                raise InvalidInputError(
                    f"malformed plan {text!r}: stage {part.strip()!r} is not "
                    "'d<dims>:<keep>', 'd<dims>', or first 'p<lists>@…', 'g<beam>@…', 'q@…' or 'h@b<bits>:<keep>'"
                )
            if (match["unit"] == "b") != (match["index"] == "h"):
                raise InvalidInputError(f"malformed plan {text!r}: stage {part.strip()!r}: 'b<bits>' sizes a binary "
                                        "code stage ('h@b<bits>'), every other stage takes 'd<dims>'")
            keep, effort, probe_dim, least = (None if match[g] is None else int(match[g])
                                              for g in ("keep", "effort", "probe_dim", "least"))
            spread, margin = (None if match[g] is None else float(match[g]) for g in ("spread", "margin"))
            stages.append(Stage(int(match["dim"]), keep, match["index"], effort, probe_dim, match["codec"], spread,
                                least, margin))
        return cls(tuple(stages))

    @classmethod
    def exact(cls, dim: int) -> "Plan":
        """Exhaustive search on the first `dim` dims."""
        return cls((Stage(dim),))

    def check(self, full_dim: int) -> "Plan":
        """Raise unless every stage fits vectors of `full_dim` dims; return self."""
        if self.stages[-1].dim > full_dim:
            raise InvalidInputError(f"plan {self} uses {self.stages[-1].dim} dims but vectors have {full_dim}")
        return self

    def keeps(self, k: int, n: int) -> list[int]:
        """Candidates each stage keeps for a query asking k of n items."""
        return [min(max(s.keep or k, k), n) for s in self.stages]

    @property
    def adaptive(self) -> bool:
        """Whether the work varies by query (an adaptive IVF probe or stopping rule)."""
        return self.stages[0].least is not None

    @cached_property
    def text(self) -> str:
        """The plan string (made once: every search result carries it)."""
        return ">".join(str(s) for s in self.stages)

    def __str__(self) -> str:
        return self.text


def as_plan(plan: "Plan | str | None", full_dim: int) -> Plan:
    """Accept a Plan, a plan string, or None (exact search at full dims)."""
    if plan is None:
        return Plan.exact(full_dim)
    if isinstance(plan, str):
        plan = Plan.parse(plan)
    if not isinstance(plan, Plan):
        raise InvalidInputError(f"plan must be a Plan or a string, got {type(plan).__name__}")
    return plan.check(full_dim)
