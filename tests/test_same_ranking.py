"""The tie-aware ranking comparison the congruence tests use (conftest.assert_same_ranking)."""

import numpy as np
import pytest
from conftest import assert_same_ranking

IDS = [[7, 3, 9, 4, 1]]
SCORES = [[0.9, 0.8, 0.8 + 1e-7, 0.5, 0.4]]  # ranks 1 and 2 tie within float rounding


def test_the_same_ranking_and_swapped_ties_pass():
    assert_same_ranking(IDS, SCORES, IDS, SCORES)
    assert_same_ranking([[7, 9, 3, 4, 1]], SCORES, IDS, SCORES)  # the tied pair in the other order
    assert_same_ranking(["a", "b"], [0.5, 0.4], ["a", "b"], [0.5, 0.4])  # one query, string ids


def test_another_item_tied_with_the_kth_may_take_the_last_place():
    assert_same_ranking([[7, 3, 9, 4, 6]], [[0.9, 0.8, 0.8, 0.5, 0.4 + 2e-7]], IDS, SCORES)


@pytest.mark.parametrize("ids, scores, message", [
    ([[3, 7, 9, 4, 1]], SCORES, r"ranks 0..0 .* hold \[3\] instead of \[7\]"),  # 0.9 and 0.8 swapped: not a tie
    ([[7, 3, 9, 1, 4]], SCORES, r"ranks 3..3 .* hold \[1\] instead of \[4\]"),
    ([[7, 3, 6, 4, 1]], SCORES, r"ranks 1..2 .* hold \[6\] instead of \[9\]"),  # a stranger inside a tie
    ([[7, 3, 9, 4, 6]], [[0.9, 0.8, 0.8, 0.5, 0.39]], "scores differ"),  # at the cut, but not tied with the k-th
    ([[7, 3, 9, 4, 1]], [[0.9, 0.8, 0.8, 0.5, 0.41]], "scores differ"),
    ([[7, 3, 9, 4, 7]], SCORES, "an id is returned twice"),
    ([[7, 3, 9, 4]], [[0.9, 0.8, 0.8, 0.5]], "shapes differ"),
])
def test_a_wrong_ranking_fails(ids, scores, message):
    with pytest.raises(AssertionError, match=message):
        assert_same_ranking(ids, scores, IDS, SCORES)

