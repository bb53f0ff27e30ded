import numpy as np
import pytest

from matsearch import InvalidInputError, truncate
from matsearch.matryoshka import check_dim, check_nesting, check_vectors, default_nesting


def test_truncate_keeps_prefix_direction_and_unit_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 48)).astype(np.float32)
    t = truncate(x, 16)
    assert t.shape == (5, 16)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(t * np.linalg.norm(x[:, :16], axis=1, keepdims=True), x[:, :16], rtol=1e-5)


def test_truncate_at_full_dim_only_normalises():
    x = np.array([[3.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(truncate(x, 2), [[0.6, 0.8]])


def test_truncate_accepts_one_vector():
    assert truncate(np.ones(8), 4).shape == (1, 4)


@pytest.mark.parametrize("dim", [0, 9, -1])
def test_dim_out_of_range_is_named(dim):
    with pytest.raises(InvalidInputError, match=f"dim {dim} is out of range"):
        truncate(np.ones((2, 8)), dim)


def test_non_integer_dim_is_rejected():
    with pytest.raises(InvalidInputError, match="dim must be an integer, got 4.5"):
        check_dim(4.5, 8)


def test_wrong_width_is_named():
    with pytest.raises(InvalidInputError, match="width 7, expected 8"):
        check_vectors(np.ones((3, 7)), 8)


@pytest.mark.parametrize("bad, shown", [(np.nan, "nan"), (np.inf, "inf")])
def test_non_finite_values_are_located(bad, shown):
    x = np.ones((3, 4), dtype=np.float32)
    x[2, 1] = bad
    with pytest.raises(InvalidInputError, match=rf"vectors\[2\] has a non-finite value {shown} at dim 1"):
        check_vectors(x)


def test_zero_norm_row_is_named():
    x = np.ones((3, 4), dtype=np.float32)
    x[1] = 0
    with pytest.raises(InvalidInputError, match=r"vectors\[1\] has zero norm"):
        check_vectors(x)


def test_empty_and_non_numeric_input():
    with pytest.raises(InvalidInputError, match="empty"):
        check_vectors(np.zeros((0, 4)))
    with pytest.raises(InvalidInputError, match="must be numeric"):
        check_vectors(np.array([["a", "b"]]))
    with pytest.raises(InvalidInputError, match="1-D or 2-D"):
        check_vectors(np.ones((2, 2, 2)))


def test_default_nesting_doubles_up_to_full_dim():
    assert default_nesting(384) == [32, 64, 128, 256, 384]
    assert default_nesting(2048) == [32, 64, 128, 256, 512, 1024, 2048]
    assert default_nesting(8) == [8]


def test_nesting_must_increase_and_end_at_full_dim():
    assert check_nesting([8, 32, 64], 64) == [8, 32, 64]
    with pytest.raises(InvalidInputError, match="strictly increasing and end at the full dim 64"):
        check_nesting([32, 16, 64], 64)
    with pytest.raises(InvalidInputError, match="end at the full dim 64"):
        check_nesting([16, 32], 64)
