"""The MRL loss: on real labelled data (scikit-learn's bundled digits), features trained with it
keep their accuracy at small prefixes, where features trained with the plain loss do not."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from torch import nn

from matsearch.errors import InvalidInputError
from matsearch.train.mrl import MRLLoss, NestedLinear

FEATURES = 32
NESTING = [2, 4, 8, 16, 32]


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return train_test_split((x / 16).astype(np.float32), y, test_size=0.3, random_state=0, stratify=y)


def _train_features(digits, nesting, *, tied=False, seed=0, epochs=40):
    """Train a small MLP encoder with the loss summed over `nesting`; return train/test features."""
    x_train, x_test, y_train, _ = digits
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, FEATURES))
    loss = MRLLoss(NestedLinear(dim=FEATURES, out_features=10, nesting=nesting, tied=tied))
    optimizer = torch.optim.Adam([*encoder.parameters(), *loss.parameters()], lr=3e-3)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            value = loss(encoder(x[batch]), y[batch])
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
    with torch.no_grad():
        return encoder(x).numpy(), encoder(torch.from_numpy(x_test)).numpy()


def _probe_accuracy(digits, features, dim):
    """Accuracy of a linear probe fitted on the first `dim` features (the same yardstick for both losses)."""
    _, _, y_train, y_test = digits
    train, test = features
    return LogisticRegression(max_iter=2000).fit(train[:, :dim], y_train).score(test[:, :dim], y_test)


@pytest.mark.parametrize("tied", [False, True], ids=["MRL", "MRL-E"])
def test_mrl_keeps_small_prefixes_accurate_without_loss_at_full_size(digits, tied):
    plain = _train_features(digits, [FEATURES])
    nested = _train_features(digits, NESTING, tied=tied)
    for dim in (2, 4):
        assert _probe_accuracy(digits, nested, dim) >= _probe_accuracy(digits, plain, dim) + 0.05, dim
    assert _probe_accuracy(digits, nested, 8) >= _probe_accuracy(digits, plain, 8) - 0.01
    assert _probe_accuracy(digits, nested, FEATURES) >= _probe_accuracy(digits, plain, FEATURES) - 0.015


def test_tied_head_reads_prefixes_of_one_weight_matrix():
    head = NestedLinear(dim=8, out_features=3, nesting=[2, 8], tied=True)
    features = torch.randn(5, 8)
    short, full = head(features)
    weight, bias = head.heads[0].weight, head.heads[0].bias
    torch.testing.assert_close(short, features[:, :2] @ weight[:, :2].T + bias)
    torch.testing.assert_close(full, features @ weight.T + bias)
    assert sum(p.numel() for p in head.parameters()) == 3 * 8 + 3


def test_loss_is_the_weighted_sum_over_prefixes():
    head = NestedLinear(dim=8, out_features=3, nesting=[2, 4, 8])
    features, target = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    terms = [nn.functional.cross_entropy(logits, target) for logits in head(features)]
    loss = MRLLoss(head, weights=[1.0, 0.5, 2.0])
    torch.testing.assert_close(loss(features, target), terms[0] + 0.5 * terms[1] + 2.0 * terms[2])


def test_bad_nesting_and_weights_are_refused():
    with pytest.raises(InvalidInputError, match=r"nesting dims must lie in 1\.\.8, got \[4, 16\]"):
        NestedLinear(dim=8, out_features=3, nesting=[4, 16])
    with pytest.raises(InvalidInputError, match=r"2 weights given for 3 nesting dims"):
        MRLLoss(NestedLinear(dim=8, out_features=3, nesting=[2, 4, 8]), weights=[1.0, 1.0])
