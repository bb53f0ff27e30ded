import numpy as np
import pytest

from matsearch import Collection, Encoder, InvalidInputError


@pytest.fixture(scope="module")
def encoder():
    return Encoder()


def test_bundled_model_embeds_offline_into_unit_vectors(encoder):
    vectors = encoder.encode(["supersonic flow over a wedge", "shock waves on a wedge at mach 3", "baking bread"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_non_text_input_is_rejected(encoder):
    with pytest.raises(InvalidInputError, match="text 1 is not a string: 3"):
        encoder.encode(["fine", 3])


def test_unknown_model_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="cannot load encoder model '/no/such/model'"):
        Encoder(model="/no/such/model").encode(["x"])


def test_collection_embeds_texts_and_queries_with_its_model(tmp_path):
    texts = ["the wing stalls at high angle of attack", "heat transfer in a hypersonic boundary layer",
             "buckling of thin cylindrical shells", "noise from jet engines"]
    with Collection.create(tmp_path / "c", transform="none") as col:
        col.add(["w", "h", "b", "n"], texts=texts)
        result = col.search(["hypersonic heating", "shell buckling under load"], k=1)
    assert list(result.ids[:, 0]) == ["h", "b"]
