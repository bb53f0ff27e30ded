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

Supervised (optional): (query, relevant document) vector pairs — from a training
split, never the evaluation one — add queries as anchors; each query's teacher is
its full-dim ranking of the items with half its weight moved onto the relevant
document, so prefixes learn both to agree with the full vectors and to find what
was judged relevant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from ..matryoshka import normalize
from . import neighbours

_SAMPLE = 50_000  # items the adapter learns from
_BATCH = 256  # anchors per step
_HELD_OUT = 512  # anchors kept apart for early stopping
_CHECK_EVERY = 25  # steps between held-out checks
_RELEVANT_WEIGHT = 0.5  # share of a query's teacher distribution put on its relevant document


def fit_adapter(vectors: np.ndarray, init: np.ndarray, nesting: list[int], *,
                pairs: tuple[np.ndarray, np.ndarray] | None = None, steps: int = 300, temperature: float = 0.05,
                learning_rate: float = 1e-3, patience: int = 4, seed: int = 0, progress: bool = False) -> np.ndarray:
    """An orthogonal (D, D) matrix, starting from `init` (orthogonal, e.g. PCA), whose prefixes
    at each dim of `nesting` rank every sampled item's neighbours as the full vectors do.

    `pairs` = (query vectors, relevant document vectors), row-aligned, adds supervision:
    each query's prefixes should rank the items as its full vector does, with half the
    teacher's weight moved onto its relevant document."""
    dims = [d for d in nesting if d < vectors.shape[1]]
    if not dims:
        raise InvalidInputError(f"the adapter needs nesting dims below the full {vectors.shape[1]}, got {nesting}")
    if len(vectors) < neighbours.NEIGHBOURS + 2:
        raise InvalidInputError(f"the adapter needs at least {neighbours.NEIGHBOURS + 2} vectors, got {len(vectors)}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    if len(vectors) > _SAMPLE:
        vectors = vectors[np.sort(rng.choice(len(vectors), _SAMPLE, replace=False))]
    sampled = len(vectors)
    if pairs is not None:
        queries, relevant = _check_pairs(pairs, vectors.shape[1])
        vectors = np.concatenate([vectors, relevant])  # relevant documents join the items they are ranked among
    items = torch.from_numpy(np.ascontiguousarray(normalize(vectors), dtype=np.float32))
    own = items[:sampled]  # the sampled items rank each other, not the copies of relevant documents
    parts = [_Anchors(own, own, neighbours.true_neighbours(own.numpy(), own.numpy(), True), None, rng, temperature)]
    if pairs is not None:
        unit = np.ascontiguousarray(normalize(queries), dtype=np.float32)
        parts.append(_Anchors(items, torch.from_numpy(unit), neighbours.true_neighbours(items.numpy(), unit, False),
                              torch.arange(sampled, len(items)), rng, temperature))
    init = torch.from_numpy(np.ascontiguousarray(init, dtype=np.float32))
    skew = torch.zeros_like(init, requires_grad=True)
    optimizer = torch.optim.Adam([skew], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    checks = [part.batch(part.held_out, generator) for part in parts]
    with torch.no_grad():
        scales = [1 / torch.clamp(_losses(init, skew, check, dims, temperature), min=1e-9) for check in checks]

    def objective(batches) -> torch.Tensor:
        return sum((_losses(init, skew, b, dims, temperature) * scale).mean() for b, scale in zip(batches, scales))

    best, best_skew, stale = float("inf"), skew.detach().clone(), 0
    with tqdm(total=steps, desc="adapter", disable=not progress) as bar:
        for step in range(steps):
            loss = objective([part.batch(part.draw(generator), generator) for part in parts])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.update(1)
            if (step + 1) % _CHECK_EVERY == 0 or step + 1 == steps:
                with torch.no_grad():
                    held = float(objective(checks))
                bar.set_postfix(held_out_loss=f"{held:.4f}")
                if held < best:
                    best, best_skew, stale = held, skew.detach().clone(), 0
                else:
                    stale += 1
                    if stale >= patience:
                        break
    with torch.no_grad():
        return _rotation(init, best_skew).numpy().astype(np.float32)


class _Anchors:
    """Vectors whose neighbour rankings the prefixes must reproduce: the items themselves
    (each excluded from its own pool), or queries with one relevant item each."""

    def __init__(self, items, anchors, true_neighbours, relevant, rng, temperature):
        self.items, self.anchors, self.relevant = items, anchors, relevant
        self.temperature = temperature
        self.neighbours = torch.from_numpy(true_neighbours)
        order = torch.from_numpy(rng.permutation(len(anchors)))
        cut = min(_HELD_OUT, len(anchors) // 5)
        self.held_out, self.train = order[:cut], order[cut:]

    def draw(self, generator) -> torch.Tensor:
        return self.train[torch.randint(len(self.train), (min(_BATCH, len(self.train)),), generator=generator)]

    def batch(self, rows: torch.Tensor, generator) -> "_Batch":
        """The rows' pool (true neighbours, relevant items, random items, each once) and teacher."""
        relevant = () if self.relevant is None else (self.relevant[rows],)
        pool = neighbours.pool(self.neighbours[rows], len(self.items), generator, *relevant)
        a, p = self.anchors[rows], self.items[pool]
        if self.relevant is None:
            excluded = rows[:, None] == pool[None, :]
        else:
            excluded = torch.zeros(len(rows), len(pool), dtype=torch.bool)
        teacher = neighbours.teacher(a, p, excluded, self.temperature)
        if self.relevant is not None:
            labels = (self.relevant[rows][:, None] == pool[None, :]).float()
            teacher = (1 - _RELEVANT_WEIGHT) * teacher + _RELEVANT_WEIGHT * labels
        return _Batch(a, p, teacher, excluded)


@dataclass
class _Batch:
    anchors: torch.Tensor
    pool: torch.Tensor
    teacher: torch.Tensor
    excluded: torch.Tensor


def _rotation(init: torch.Tensor, skew: torch.Tensor) -> torch.Tensor:
    return init @ torch.linalg.matrix_exp(skew - skew.T)


def _losses(init, skew, batch: _Batch, dims, temperature) -> torch.Tensor:
    """For each prefix dim, KL(teacher's neighbour distribution ‖ the prefix's)."""
    rotation = _rotation(init, skew)
    ya, yp = batch.anchors @ rotation, batch.pool @ rotation
    losses = []
    for d in dims:
        sims = torch.nn.functional.normalize(ya[:, :d], dim=1) @ torch.nn.functional.normalize(yp[:, :d], dim=1).T
        student = torch.log_softmax(sims.masked_fill(batch.excluded, -1e4) / temperature, dim=1)
        losses.append(torch.nn.functional.kl_div(student, batch.teacher, reduction="batchmean"))
    return torch.stack(losses)


def _check_pairs(pairs, dim: int) -> tuple[np.ndarray, np.ndarray]:
    queries, relevant = (np.asarray(part, dtype=np.float32) for part in pairs)
    if queries.ndim != 2 or queries.shape != relevant.shape or queries.shape[1] != dim or not len(queries):
        raise InvalidInputError(f"pairs must be two ({len(queries)}, {dim}) arrays of query and relevant-document "
                                f"vectors, got shapes {queries.shape} and {relevant.shape}")
    return queries, relevant
