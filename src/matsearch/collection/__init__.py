"""Persistent collections: ids, text, metadata and one stored copy of each vector."""

from .collection import Collection, Record

__all__ = ["Collection", "Record"]
