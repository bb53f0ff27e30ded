"""Loading retrieval collections."""

from .beir import BeirDataset, load_beir, read_corpus_jsonl
from .sources import Fields, open_source

__all__ = ["BeirDataset", "Fields", "load_beir", "open_source", "read_corpus_jsonl"]
