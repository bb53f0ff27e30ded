"""A learned Matryoshka adapter: an orthogonal map that makes any model's prefixes good.

Unsupervised: for a sample of the collection's own items (each one a pseudo-query),
the ranking of its neighbours by cosine on every adapted prefix in the nesting list
should match the ranking by the original full vectors. The loss is the KL divergence
between the softmax of the full-dim similarities (the teacher) and that of each
prefix's similarities, over a pool holding every anchor's true nearest neighbours
and random items, each prefix's term divided by its value under PCA (so a long
prefix that PCA already serves well is not traded for a short one). The map is
the PCA rotation times exp(A − Aᵀ), so it starts at PCA, stays exactly
orthogonal (full-dim cosines, hence full-dim quality, are unchanged), and is
deterministic for a seed. Training stops early when the loss on held-out
anchors stops falling.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from ..matryoshka import normalize

_SAMPLE = 50_000  # items the adapter learns from
_NEIGHBOURS = 32  # true neighbours of each anchor put in its pool
_BATCH = 256  # anchors per step
_RANDOM_POOL = 1024  # random items added to every step's pool
_HELD_OUT = 512  # anchors kept apart for early stopping
_CHECK_EVERY = 25  # steps between held-out checks


def fit_adapter(vectors: np.ndarray, init: np.ndarray, nesting: list[int], *, steps: int = 300,
                temperature: float = 0.05, learning_rate: float = 1e-3, patience: int = 4, seed: int = 0,
                progress: bool = False) -> np.ndarray:
    """An orthogonal (D, D) matrix, starting from `init` (orthogonal, e.g. PCA), whose prefixes
    at each dim of `nesting` rank every sampled item's neighbours as the full vectors do."""
    dims = [d for d in nesting if d < vectors.shape[1]]
    if not dims:
        raise InvalidInputError(f"the adapter needs nesting dims below the full {vectors.shape[1]}, got {nesting}")
    if len(vectors) < _NEIGHBOURS + 2:
        raise InvalidInputError(f"the adapter needs at least {_NEIGHBOURS + 2} vectors, got {len(vectors)}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    if len(vectors) > _SAMPLE:
        vectors = vectors[np.sort(rng.choice(len(vectors), _SAMPLE, replace=False))]
    items = torch.from_numpy(np.ascontiguousarray(normalize(vectors), dtype=np.float32))
    neighbours = torch.from_numpy(_true_neighbours(items.numpy()))
    order = torch.from_numpy(rng.permutation(len(items)))
    held_out, train = order[: min(_HELD_OUT, len(items) // 5)], order[min(_HELD_OUT, len(items) // 5):]
    init = torch.from_numpy(np.ascontiguousarray(init, dtype=np.float32))
    skew = torch.zeros_like(init, requires_grad=True)
    optimizer = torch.optim.Adam([skew], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    check_pool = _pool(held_out, neighbours, len(items), generator)
    with torch.no_grad():
        scale = 1 / torch.clamp(_losses(items, init, skew, held_out, check_pool, dims, temperature), min=1e-9)
    best, best_skew, stale = float("inf"), skew.detach().clone(), 0
    with tqdm(total=steps, desc="adapter", disable=not progress) as bar:
        for step in range(steps):
            anchors = train[torch.randint(len(train), (min(_BATCH, len(train)),), generator=generator)]
            pool = _pool(anchors, neighbours, len(items), generator)
            loss = (_losses(items, init, skew, anchors, pool, dims, temperature) * scale).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.update(1)
            if (step + 1) % _CHECK_EVERY == 0 or step + 1 == steps:
                with torch.no_grad():
                    held = float((_losses(items, init, skew, held_out, check_pool, dims, temperature) * scale).mean())
                bar.set_postfix(held_out_loss=f"{held:.4f}")
                if held < best:
                    best, best_skew, stale = held, skew.detach().clone(), 0
                else:
                    stale += 1
                    if stale >= patience:
                        break
    with torch.no_grad():
        return _rotation(init, best_skew).numpy().astype(np.float32)


def _rotation(init: torch.Tensor, skew: torch.Tensor) -> torch.Tensor:
    return init @ torch.linalg.matrix_exp(skew - skew.T)


def _pool(anchors: torch.Tensor, neighbours: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """The anchors' true neighbours and random items, each once."""
    extra = torch.randint(count, (_RANDOM_POOL,), generator=generator)
    return torch.unique(torch.cat([neighbours[anchors].flatten(), extra]))


def _losses(items, init, skew, anchors, pool, dims, temperature) -> torch.Tensor:
    """For each prefix dim, KL(full-dim neighbour distribution ‖ prefix neighbour distribution)."""
    rotation = _rotation(init, skew)
    a, p = items[anchors], items[pool]
    itself = anchors[:, None] == pool[None, :]
    teacher = torch.softmax((a @ p.T).masked_fill(itself, -1e4) / temperature, dim=1)
    ya, yp = a @ rotation, p @ rotation
    losses = []
    for d in dims:
        sims = torch.nn.functional.normalize(ya[:, :d], dim=1) @ torch.nn.functional.normalize(yp[:, :d], dim=1).T
        student = torch.log_softmax(sims.masked_fill(itself, -1e4) / temperature, dim=1)
        losses.append(torch.nn.functional.kl_div(student, teacher, reduction="batchmean"))
    return torch.stack(losses)


def _true_neighbours(items: np.ndarray) -> np.ndarray:
    """Each item's nearest other items by full-dim inner product (faiss exact search)."""
    index = faiss.IndexFlatIP(items.shape[1])
    index.add(items)
    found = index.search(items, _NEIGHBOURS + 1)[1]
    return np.array([[j for j in row if j != i][:_NEIGHBOURS] for i, row in enumerate(found)], dtype=np.int64)
