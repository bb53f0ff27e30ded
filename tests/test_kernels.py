"""The small compiled helpers of the one-query path (the re-rank and id lookup are tested with the store and
id table): what they accept, and that anything else falls back or fails loudly."""

import numpy as np
import pytest

from matsearch import _kernels


def test_squares_sums_in_double_and_declines_what_is_not_float32_contiguous():
    x = np.array([[3.0, 4.0]], dtype=np.float32)
    assert _kernels.squares(x) == 25.0
    assert _kernels.squares(np.full((1, 4), 1e20, dtype=np.float32)) == pytest.approx(4e40)  # no float32 overflow
    assert np.isnan(_kernels.squares(np.array([[1.0, np.nan]], dtype=np.float32)))
    for other in (x.astype(np.float64), x.astype(np.int32), np.zeros((2, 4), np.float32)[:, ::2], [1.0, 2.0]):
        assert _kernels.squares(other) == -1.0


def test_all_finite_finds_nan_and_inf_and_refuses_other_arrays():
    assert _kernels.all_finite(np.zeros((2, 10), dtype=np.float32))
    for bad in (np.nan, np.inf, -np.inf):
        scores = np.zeros((2, 10), dtype=np.float32)
        scores[1, 7] = bad
        assert not _kernels.all_finite(scores)
    with pytest.raises(TypeError, match="float32 C-contiguous"):
        _kernels.all_finite(np.zeros(3))


def test_probe_picks_the_nearest_lists_in_order():
    centroids = np.eye(4, dtype=np.float32)
    query = np.array([0.1, 0.9, 0.5, 0.0], dtype=np.float32)
    lists = np.empty(2, dtype=np.int64)
    assert _kernels.probe(centroids, query, 2, lists) == 2
    assert lists.tolist() == [1, 2]
    spread = np.empty(4, dtype=np.int64)  # cosines 0.87, 0.48, 0.10, 0: within 0.5 of the best, at least 1
    assert _kernels.probe(centroids, query, 4, spread, 1, 0.5) == 2 and spread[:2].tolist() == [1, 2]
    assert _kernels.probe(centroids, query, 4, spread, 3, 0.5) == 3  # at least 3
    assert _kernels.probe(centroids, query, 4, spread, 1, 0.01) == 1 and spread[0] == 1
    ties = np.empty(3, dtype=np.int64)
    _kernels.probe(np.zeros((5, 4), dtype=np.float32), query, 3, ties)  # all tied: the lowest lists
    assert ties.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="nprobe 6 of 5 lists"):
        _kernels.probe(np.zeros((5, 4), dtype=np.float32), query, 6, np.empty(6, dtype=np.int64))


def test_probe_with_a_bias_of_minus_half_the_squared_norm_picks_the_nearest_centroids():
    centroids = (np.random.default_rng(0).normal(size=(50, 8)) * np.arange(1, 51)[:, None]).astype(np.float32)
    query = np.random.default_rng(1).normal(size=8).astype(np.float32) * 10
    bias = (-0.5 * np.sum(centroids**2, axis=1)).astype(np.float32)
    lists = np.empty(5, dtype=np.int64)
    assert _kernels.probe(centroids, query, 5, lists, 5, -1.0, bias) == 5
    assert lists.tolist() == sorted(np.argsort(np.sum((centroids - query) ** 2, axis=1))[:5].tolist())


def test_a_ranked_probe_gives_the_nearest_lists_best_first_ties_to_the_lower_list():
    rng = np.random.default_rng(0)
    for n, nprobe in ((256, 128), (64, 64), (100, 1), (300, 200)):
        centroids = rng.standard_normal((n, 16)).astype(np.float32)
        centroids[7] = centroids[3]  # a tie: list 3 comes first
        query = rng.standard_normal(16).astype(np.float32)
        lists = np.empty(nprobe, np.int64)
        kept = _kernels.probe(centroids, query, nprobe, lists, nprobe, -1.0, None, True)
        scores = centroids.astype(np.float64) @ query.astype(np.float64)
        assert kept == nprobe and lists.tolist() == np.lexsort((np.arange(n), -scores))[:nprobe].tolist()
        ascending = np.empty(nprobe, np.int64)
        _kernels.probe(centroids, query, nprobe, ascending)
        assert ascending.tolist() == sorted(lists.tolist())  # the same lists, in list order by default
