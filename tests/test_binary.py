"""Binary codes: packing, Hamming top-k against a brute-force reference, ITQ."""

import numpy as np
import pytest

from matsearch import InvalidInputError
from matsearch.quantize import binary
from matsearch.quantize.binary import (fit_itq, hamming_topk, pack_signs, unpack_signs,
                                       words_for)


@pytest.mark.parametrize("bits", [1, 63, 64, 65, 128, 200, 256])
def test_packing_round_trips_and_fills_little_endian_words(bits):
    values = np.random.default_rng(bits).normal(size=(37, bits))
    codes = pack_signs(values)
    assert codes.dtype == np.uint64 and codes.shape == (37, words_for(bits))
    np.testing.assert_array_equal(unpack_signs(codes, bits), values > 0)
    first = int(codes[0, 0])
    assert all(((first >> j) & 1) == (values[0, j] > 0) for j in range(min(bits, 64)))


def reference_topk(codes, queries, bits, k):
    """Hamming by comparing unpacked bits; order by (distance, row) with a full stable sort."""
    a, q = unpack_signs(codes, bits), unpack_signs(queries, bits)
    distances = (q[:, None, :] != a[None, :, :]).sum(axis=2)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distances, order, axis=1)


@pytest.mark.parametrize("bits,k", [(64, 1), (64, 50), (128, 10), (256, 999), (96, 1000)])
def test_hamming_topk_equals_brute_force(bits, k):
    rng = np.random.default_rng(bits + k)
    centres = rng.normal(size=(8, bits))  # clustered codes: many tied distances
    codes = pack_signs(centres[rng.integers(0, 8, 1000)] + 0.7 * rng.normal(size=(1000, bits)))
    queries = pack_signs(rng.normal(size=(12, bits)))
    ids, dists = hamming_topk(codes, queries, k)
    want_ids, want_dists = reference_topk(codes, queries, bits, k)
    np.testing.assert_array_equal(dists, want_dists)
    np.testing.assert_array_equal(ids, want_ids)


def test_streamed_selection_across_many_chunks_keeps_ties_by_row(monkeypatch):
    monkeypatch.setattr(binary, "_SCAN_CHUNK", 64)  # 1,000 codes in 16 chunks: the running bound prunes
    rng = np.random.default_rng(3)
    codes = pack_signs(rng.normal(size=(4, 64))[rng.integers(0, 4, 1000)] + 0.3 * rng.normal(size=(1000, 64)))
    queries = pack_signs(rng.normal(size=(6, 64)))
    for k in (1, 7, 100, 1000):
        ids, dists = hamming_topk(codes, queries, k)
        want_ids, want_dists = reference_topk(codes, queries, 64, k)
        np.testing.assert_array_equal(dists, want_dists)
        np.testing.assert_array_equal(ids, want_ids)
    ties = np.zeros((50, 1), dtype=np.uint64)  # every code equal: all distances tie
    np.testing.assert_array_equal(hamming_topk(ties, ties[:1], 5)[0], [[0, 1, 2, 3, 4]])


def test_itq_is_deterministic_and_loses_less_than_a_random_rotation(scifact):
    _, docs, _ = scifact
    from matsearch.transform import Transform

    elastic = Transform(kind="pca").fit(docs).apply(docs)
    mean, rotation = fit_itq(elastic, 32, seed=1)
    again = fit_itq(elastic, 32, seed=1)
    np.testing.assert_array_equal(rotation, again[1])
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(32), atol=1e-5)
    centred = elastic[:, :32] - mean

    def agreement(r):  # ITQ's objective: ‖B − VR‖² = const − 2·Σ|VR| for B = sign(VR)
        return np.abs(centred @ r).sum()

    random, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(32, 32)))
    assert agreement(rotation) > 1.02 * agreement(random)


def test_bad_binary_inputs_are_named():
    with pytest.raises(InvalidInputError, match="bits must be a positive integer, got 0"):
        words_for(0)
    with pytest.raises(InvalidInputError, match=r"codes of 64 bits need 1 words per row, got shape \(3, 2\)"):
        unpack_signs(np.zeros((3, 2), dtype=np.uint64), 64)
    codes = pack_signs(np.ones((5, 64)))
    with pytest.raises(InvalidInputError, match="k must be between 1 and the 5 codes, got 6"):
        hamming_topk(codes, pack_signs(np.ones((1, 64))), 6)
    with pytest.raises(InvalidInputError, match="must be uint64 with the same words"):
        hamming_topk(codes, pack_signs(np.ones((1, 128))), 2)


def test_learned_code_training_is_deterministic_for_a_seed(scifact):
    from matsearch.train.codes import fit_learned_codes
    from matsearch.transform import Transform

    _, docs, _ = scifact
    elastic = Transform(kind="pca").fit(docs).apply(docs[:2000])
    mean, projection = fit_learned_codes(elastic, 32, steps=10, seed=4)
    assert mean.shape == (64,) and projection.shape == (64, 32) and projection.dtype == np.float32
    again = fit_learned_codes(elastic, 32, steps=10, seed=4)
    np.testing.assert_array_equal(projection, again[1])
    np.testing.assert_array_equal(mean, again[0])
    assert not np.array_equal(projection, fit_learned_codes(elastic, 32, steps=10, seed=5)[1])
    assert pack_signs((elastic[:, :64] - mean) @ projection).shape == (2000, 1)
    with pytest.raises(InvalidInputError, match=r"1 <= bits \(32\) <= input_dim \(16\) <= dim \(384\)"):
        fit_learned_codes(elastic, 32, input_dim=16)
