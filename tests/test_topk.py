import numpy as np
import pytest

from matsearch.topk import top_k


def reference(scores, k):
    return np.lexsort((np.arange(len(scores)), -scores))[:k]


@pytest.mark.parametrize("n, k", [(10, 3), (1000, 10), (100_000, 10), (100_000, 400), (50_000, 5000), (20, 20)])
def test_top_k_matches_a_full_sort(n, k):
    scores = np.random.default_rng(n + k).normal(size=n).astype(np.float32)
    np.testing.assert_array_equal(top_k(scores, k), reference(scores, k))


def test_ties_go_to_the_lower_index():
    scores = np.zeros(100_000, dtype=np.float32)
    scores[[5, 70_000, 99_999]] = 1.0
    np.testing.assert_array_equal(top_k(scores, 5), [5, 70_000, 99_999, 0, 1])


def test_a_misleading_sample_falls_back_to_the_exact_threshold():
    scores = np.zeros(100_000, dtype=np.float32)
    scores[::24] = np.linspace(10, 20, len(scores[::24]))  # the sample sees only the few highest values
    np.testing.assert_array_equal(top_k(scores, 50), reference(scores, 50))


def test_minus_infinity_is_ranked_last():
    scores = np.full(60_000, -np.inf, dtype=np.float32)
    scores[[3, 9]] = [0.5, 0.7]
    assert list(top_k(scores, 3)[:2]) == [9, 3]


@pytest.mark.parametrize("n, k", [(100_000, 2000), (100_000, 10), (3000, 300), (500, 500)])
def test_unordered_selection_is_the_same_set(n, k):
    scores = np.random.default_rng(k).normal(size=n).astype(np.float32)
    assert set(top_k(scores, k, ordered=False)) == set(reference(scores, k))
