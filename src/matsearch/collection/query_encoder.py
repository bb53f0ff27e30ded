"""`Collection.search(..., encoder="fast")`: text queries embedded by the model's fast student (encoder_student.py),
then searched as vectors against the full model's documents; vector and lexical queries need no encoder."""

from __future__ import annotations

from ..encoder_student import check_variant
from . import hybrid


def search(col, queries, encoder: str, **options):
    """`col.search(queries, **options)` with text queries embedded by sub-model `encoder`; the result's `encoder`
    says which one did."""
    check_variant(encoder, col.manifest.model)
    embedded = hybrid.is_text(queries) and options["mode"] != "lexical" and options["query_vectors"] is None
    if embedded:
        texts = hybrid._check_texts(queries)
        vectors = col.encoder_for(encoder).encode(texts)
        col._sync()
        if (options["mode"] or hybrid._default_mode(col, texts, vectors)) == "dense":
            queries = vectors
        else:
            options["query_vectors"] = vectors
    result = col.search(queries, **options)
    if embedded:
        result.encoder = encoder
    return result
