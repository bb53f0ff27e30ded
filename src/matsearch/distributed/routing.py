"""Which shard holds an id: a stable hash of the id, the same in every process and on every machine."""

from __future__ import annotations

import zlib

import numpy as np


def shard_of(ids: list[str], shards: int) -> np.ndarray:
    """The shard (0 … shards − 1) of each id: CRC-32 of its UTF-8 bytes, modulo the shard count."""
    return np.array([zlib.crc32(i.encode()) % shards for i in ids], dtype=np.int64)


def split(ids: list[str], shards: int) -> dict[int, np.ndarray]:
    """Positions in `ids` of each shard's ids, for the shards that hold any."""
    owner = shard_of(ids, shards)
    return {int(s): np.flatnonzero(owner == s) for s in np.unique(owner)}
