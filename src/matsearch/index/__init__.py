"""Indexes that let a query skip most of the collection; each is derived from the BlockStore."""

from .binary import BinaryIndex
from .graph import GraphIndex
from .ivf import IVFIndex
from .pq import PQIndex, best_prefix

__all__ = ["BinaryIndex", "GraphIndex", "IVFIndex", "PQIndex", "best_prefix"]
