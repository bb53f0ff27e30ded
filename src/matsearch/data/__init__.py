"""Loading retrieval collections."""

from .beir import BeirDataset, load_beir, read_corpus_jsonl

__all__ = ["BeirDataset", "load_beir", "read_corpus_jsonl"]
