"""What the adapter and the learned codes both learn from: each anchor's true neighbours,
a pool of candidates per batch, and the full-dim ranking over it as a teacher distribution."""

from __future__ import annotations

import faiss
import numpy as np
import torch

NEIGHBOURS = 32  # true neighbours of each anchor put in its pool
RANDOM_POOL = 1024  # random items added to every batch's pool


def true_neighbours(items: np.ndarray, anchors: np.ndarray, anchors_are_items: bool) -> np.ndarray:
    """Each anchor's nearest items by full-dim inner product (faiss exact search), itself left out."""
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    found = index.search(anchors, NEIGHBOURS + 1)[1]
    if not anchors_are_items:
        return found[:, :NEIGHBOURS].astype(np.int64)
    return np.array([[j for j in row if j != i][:NEIGHBOURS] for i, row in enumerate(found)], dtype=np.int64)


def pool(neighbours: torch.Tensor, count: int, generator: torch.Generator, *extra: torch.Tensor) -> torch.Tensor:
    """Item rows to rank for a batch: its anchors' true `neighbours`, random items of the `count`,
    and any `extra` rows, each once."""
    random = torch.randint(count, (RANDOM_POOL,), generator=generator)
    return torch.unique(torch.cat([neighbours.flatten(), random, *extra]))


def teacher(anchors: torch.Tensor, pool_items: torch.Tensor, excluded: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax of the anchors' full-dim inner products with the pool (`excluded` pairs get none)."""
    return torch.softmax((anchors @ pool_items.T).masked_fill(excluded, -1e4) / temperature, dim=1)
