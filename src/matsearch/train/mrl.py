"""Matryoshka Representation Learning for features: a task loss summed over nested prefixes.

`NestedLinear` is the task head: for every dim m of the nesting list it maps the
first m features to logits. MRL keeps one linear head per m; MRL-E ties them to one
weight matrix W and reads logits_m = x[:m] · W[:, :m]ᵀ, so the heads cost no more
memory than the full-size one. `MRLLoss` applies a criterion (cross-entropy by
default) to each prefix's logits and sums the terms, optionally weighted, so the
encoder in front learns features whose every prefix serves the task. Works with
any PyTorch encoder: train `encoder` and `loss` parameters together.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInputError


class NestedLinear(nn.Module):
    """Logits from each nested prefix of the features: one head per dim, or one tied head."""

    def __init__(self, *, dim: int, out_features: int, nesting: list[int], tied: bool = False, bias: bool = True):
        super().__init__()
        nesting = sorted(set(nesting))
        if not nesting or nesting[0] < 1 or nesting[-1] > dim:
            raise InvalidInputError(f"nesting dims must lie in 1..{dim}, got {nesting}")
        self.nesting = nesting
        self.tied = tied
        if tied:
            self.heads = nn.ModuleList([nn.Linear(nesting[-1], out_features, bias=bias)])
        else:
            self.heads = nn.ModuleList([nn.Linear(m, out_features, bias=bias) for m in nesting])

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        """One logits tensor per nesting dim, shortest first."""
        if self.tied:
            head = self.heads[0]
            return [nn.functional.linear(features[:, :m], head.weight[:, :m], head.bias) for m in self.nesting]
        return [head(features[:, :m]) for head, m in zip(self.heads, self.nesting)]


class MRLLoss(nn.Module):
    """Σ_m weight_m · criterion(head_m(features[:, :m]), target) over the head's nesting dims."""

    def __init__(self, head: NestedLinear, *, criterion: nn.Module | None = None,
                 weights: list[float] | None = None):
        super().__init__()
        if weights is not None and len(weights) != len(head.nesting):
            raise InvalidInputError(f"{len(weights)} weights given for {len(head.nesting)} nesting dims {head.nesting}")
        self.head = head
        self.criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
        self.weights = list(weights) if weights is not None else [1.0] * len(head.nesting)

    def forward(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = [w * self.criterion(logits, target) for w, logits in zip(self.weights, self.head(features))]
        return torch.stack(terms).sum()
