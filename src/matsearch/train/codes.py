"""Learned binary codes: a projection whose sign bits keep the full vectors' neighbours.

The projection maps the first `input_dim` dims of elastic (PCA-ordered) vectors to
`bits` bits. It starts at ITQ (its rotation of the first `bits` dims; zero weight on
the rest) and is trained with a straight-through sign — the forward pass uses the
bits themselves, the backward pass the gradient of tanh — so that, for sampled
anchors, the softmax of code agreement (matching bits / bits) over a pool of their
true neighbours and random items matches the softmax of full-dim cosines. The
codes are `pack_signs((x[:, :input_dim] - mean) @ projection)`, the same form as ITQ's.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from ..matryoshka import normalize
from ..quantize.binary import fit_itq
from . import neighbours

_SAMPLE = 50_000  # items the codes learn from
_BATCH = 256  # anchors per step
_TEACHER_TEMPERATURE = 0.05
_AGREEMENT_SCALE = 30.0  # code agreement in [-1, 1] times this gives the student's logits
_SHARPNESS = 20.0  # tanh(sharpness · z) carries the sign's gradient


def fit_learned_codes(vectors: np.ndarray, bits: int, *, input_dim: int | None = None, steps: int = 600,
                      learning_rate: float = 1e-4, seed: int = 0,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mean (input_dim,), projection (input_dim, bits)) for codes of `bits` bits learned from
    (a sample of up to 50,000 of) `vectors`; `input_dim` defaults to min(2 · bits, dim)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    input_dim = min(2 * bits, dim) if input_dim is None else input_dim
    if not 1 <= bits <= input_dim <= dim:
        raise InvalidInputError(f"learned codes need 1 <= bits ({bits}) <= input_dim ({input_dim}) <= dim ({dim})")
    if len(vectors) < 64:
        raise InvalidInputError(f"learned codes need at least 64 vectors, got {len(vectors)}")
    rng = np.random.default_rng(seed)
    if len(vectors) > _SAMPLE:
        vectors = vectors[np.sort(rng.choice(len(vectors), _SAMPLE, replace=False))]
    itq_mean, rotation = fit_itq(vectors, bits, seed=seed)
    mean = np.concatenate([itq_mean, vectors[:, bits:input_dim].mean(axis=0)]).astype(np.float32)
    start = np.zeros((input_dim, bits), dtype=np.float32)
    start[:bits] = rotation
    unit = np.ascontiguousarray(normalize(vectors), dtype=np.float32)
    true_neighbours = torch.from_numpy(neighbours.true_neighbours(unit, unit, True))
    full = torch.from_numpy(unit)
    centred = torch.from_numpy(np.ascontiguousarray(vectors[:, :input_dim] - mean))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    projection = torch.tensor(start, requires_grad=True)
    optimizer = torch.optim.Adam([projection], lr=learning_rate)
    for _ in tqdm(range(steps), desc=f"learned codes ({bits} bits)", disable=not progress):
        anchors = torch.randint(len(full), (min(_BATCH, len(full)),), generator=generator)
        pool = neighbours.pool(true_neighbours[anchors], len(full), generator)
        itself = anchors[:, None] == pool[None, :]
        teacher = neighbours.teacher(full[anchors], full[pool], itself, _TEACHER_TEMPERATURE)
        agreement = _bits(centred[anchors] @ projection) @ _bits(centred[pool] @ projection).T / bits
        student = torch.log_softmax((agreement * _AGREEMENT_SCALE).masked_fill(itself, -1e4), dim=1)
        loss = torch.nn.functional.kl_div(student, teacher, reduction="batchmean")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return mean, projection.detach().numpy().astype(np.float32)


def _bits(z: torch.Tensor) -> torch.Tensor:
    """±1 signs forward, tanh's gradient backward (the straight-through estimator)."""
    soft = torch.tanh(_SHARPNESS * z)
    return soft + (torch.sign(z) - soft).detach()
