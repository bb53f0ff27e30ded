"""`Collection.search(..., encoder="fast"|"auto")`: text queries embedded by the model's fast student
(encoder_student.py) or by the full model, then searched as vectors against the full model's documents; vector and
lexical queries need no encoder. Under a latency budget the encoder's calibrated time is part of the query's."""

from __future__ import annotations

from ..encoder_student import VARIANTS, check_variant
from ..errors import InvalidInputError
from . import hybrid

ENCODERS = ("auto", *VARIANTS)


def search(col, queries, encoder: str, **options):
    """`col.search(queries, **options)` with text queries embedded by sub-model `encoder` ("auto": the full model,
    unless a `max_ms` budget fits a plan only after the fast student, as `Calibration.encoder_ms` timed them); a
    text query's `max_ms` leaves the search what the encoder's calibrated time does not take. The result's
    `encoder` says which sub-model embedded the queries."""
    if encoder not in ENCODERS:
        raise InvalidInputError(f"encoder {encoder!r} is not one of {ENCODERS}")
    if encoder != "auto":
        check_variant(encoder, col.manifest.model)
    embedded = hybrid.is_text(queries) and options["mode"] != "lexical" and options["query_vectors"] is None
    budget = options["max_ms"]
    calibration = col.calibration() if embedded and budget is not None else None
    if calibration is not None:  # "auto": the first sub-model, most accurate first, after which a plan fits
        timed = tuple(v for v in VARIANTS if v in (calibration.encoder_ms or {})) or ("full",)
        encoder, options["max_ms"] = calibration.encoder_for(budget, timed if encoder == "auto" else (encoder,))
    elif encoder == "auto":
        encoder = "full"
    if embedded:
        texts = hybrid._check_texts(queries)
        vectors = col.encoder_for(encoder).encode(texts)
        col._sync()
        if (options["mode"] or hybrid._default_mode(col, texts, vectors)) == "dense":
            queries = vectors
        else:
            options["query_vectors"] = vectors
    result = col.search(queries, encoder="full", **options)
    if embedded:
        result.encoder = encoder
        if options["max_ms"] != budget:
            result.target = f"max_ms={budget}: the {encoder} encoder, then {result.target}"
    return result
