import numpy as np
import pytest

from matsearch import BlockStore, InvalidInputError
from matsearch.recipe import Recipe


@pytest.mark.parametrize("text", ["flat", "hnsw32@d96", "ivf1024@d32:d128", "ivf256@d64:d64,hnsw16@d128",
                                  "pq16@d128", "opq32@d384,ivf64@d32:d64", "hnsw32@d96:d192/int8",
                                  "hnsw16@d64/f16", "hnsw32@d64:d128", "ivf1024@d64+d32:d128/pq32",
                                  "ivf256@d32+d16+d64:d128/int8", "ivf64@d32:d64/f16",
                                  "ivf1024@d64:d128/pq64x4fs"])
def test_recipes_round_trip(text):
    assert str(Recipe.parse(text)) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "non-empty string"),
        ("ivf1024@d32", "'ivf1024@d32' is not"),
        ("hnsw@d96", "'hnsw@d96' is not"),
        ("hnsw32@d96,hnsw16@d64", "names two indexes of one kind"),
        ("sq8@d128", "'sq8@d128' is not"),
        ("hnsw32@d96/int4", "'hnsw32@d96/int4' is not"),
        ("ivf64@d32:d64/pq", "'ivf64@d32:d64/pq' is not"),
        ("ivf64@d32:d64/pq32x8fs", "'ivf64@d32:d64/pq32x8fs' is not"),
    ],
)
def test_malformed_recipes_are_named(text, message):
    with pytest.raises(InvalidInputError, match=message):
        Recipe.parse(text)


def test_recipes_are_checked_against_the_vectors():
    with pytest.raises(InvalidInputError, match="scan dim must be one of the nesting dims"):
        Recipe.parse("ivf64@d32:d100").check(384, [32, 64, 128, 256, 384])
    Recipe.parse("ivf64@d32:d96/pq48x4fs").check(384, [32, 64, 128, 256, 384])  # coded lists: any dim
    with pytest.raises(InvalidInputError, match="coded lists any dim up to 384"):
        Recipe.parse("ivf64@d32:d400/int8").check(384, [32, 64, 128, 256, 384])
    with pytest.raises(InvalidInputError, match="dim 512 exceeds the vectors' 384"):
        Recipe.parse("hnsw32@d512").check(384, [32, 64, 128, 256, 384])
    with pytest.raises(InvalidInputError, match="build dim must not exceed the graph's dim"):
        Recipe.parse("hnsw32@d192:d96").check(384, [32, 64, 128, 256, 384])
    with pytest.raises(InvalidInputError, match="centroid dims at most 384"):
        Recipe.parse("ivf64@d32+d512:d64").check(384, [32, 64, 128, 256, 384])
    with pytest.raises(InvalidInputError, match="scan dim must be a multiple of the PQ sub-spaces"):
        Recipe.parse("ivf64@d32:d64/pq48").check(384, [32, 64, 128, 256, 384])
    with pytest.raises(InvalidInputError, match="scan dim must be a multiple of the PQ sub-spaces"):
        Recipe.parse("ivf64@d32:d64/pq48x4fs").check(384, [32, 64, 128, 256, 384])


def test_memory_is_known_before_building(scifact, tmp_path):
    _, docs, _ = scifact
    nesting = [32, 64, 128, 256, 384]
    store = BlockStore.create(tmp_path / "v", nesting)
    store.append(docs)
    for text in ["ivf64@d32:d128", "ivf64@d32+d64:d128/pq16", "ivf64@d32:d128/int8", "ivf64@d32:d128/pq64x4fs", "hnsw32@d96", "hnsw16@d64", "hnsw32@d64:d128/int8", "pq16@d128", "opq8@d64"]:
        part = Recipe.parse(text).parts[0]
        estimate = part.bytes_per_vector(store.count, nesting)
        built = part.make().build(store).resident_bytes() / store.count
        assert estimate == pytest.approx(built, rel=0.1), text
    assert Recipe.parse("flat").bytes_per_vector(100, nesting) == 0
