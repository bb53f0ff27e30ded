import numpy as np
import pytest
from conftest import assert_same_ranking, index_file

from matsearch import Collection, CollectionError, InvalidInputError

RECIPE = "ivf32@d32:d64,hnsw16@d64"


@pytest.fixture
def indexed(tmp_path, scifact):
    ids, docs, _ = scifact
    path = tmp_path / "col"
    with Collection.create(path) as col:
        col.add(ids[:4000], vectors=docs[:4000])
        col.build(RECIPE)
    return path


def test_indexes_persist_and_return_identical_results(indexed, scifact):
    _, _, queries = scifact
    with Collection.open(indexed, writable=True) as col:
        before = {p: col.search(queries[:50], k=10, plan=p).ids for p in ("p8@d64:200>d384", "g32@d64:100>d384")}
    with Collection.open(indexed) as col:
        assert col.manifest.recipe == RECIPE
        for plan, ids in before.items():
            np.testing.assert_array_equal(col.search(queries[:50], k=10, plan=plan).ids, ids)


@pytest.mark.parametrize("plan", ["p32@d64:4000>d384", "g4000@d64:4000>d384"])
def test_exhaustive_index_plans_equal_exact_search(indexed, scifact, plan):
    _, _, queries = scifact
    with Collection.open(indexed) as col:
        exact = col.search(queries[:30], k=10)
        found = col.search(queries[:30], k=10, plan=plan)
        assert_same_ranking(found.ids, found.scores, exact.ids, exact.scores)


def test_adds_and_deletes_after_a_build(indexed, scifact):
    ids, docs, _ = scifact
    with Collection.open(indexed) as reader:
        with Collection.open(indexed, writable=True) as col:
            col.add(ids[4000:4100], vectors=docs[4000:4100])
            col.delete(ids[:10])
        for plan in ("p1@d64:20>d384", "g16@d64:20>d384"):
            assert reader.search(docs[4050], k=1, plan=plan).ids[0, 0] == ids[4050]  # an unindexed tail row
            found = reader.search(docs[:10], k=5, plan=plan).ids
            assert not set(found.ravel()) & set(ids[:10])


def test_a_reader_follows_a_rebuild_and_plans_need_their_index(indexed, scifact):
    _, _, queries = scifact
    with Collection.open(indexed) as reader:
        with Collection.open(indexed, writable=True) as col:
            col.build("hnsw16@d64")
        assert not index_file(indexed, "ivf.npz").exists() and index_file(indexed, "hnsw.faiss").exists()
        with pytest.raises(InvalidInputError, match="needs an IVF index, but collection .* has recipe 'hnsw16@d64'"):
            reader.search(queries[0], plan="p8@d64:100>d384")
        assert reader.search(queries[0], k=3, plan="g16@d64:50>d384").ids.shape == (1, 3)
        assert reader.info()["recipe"] == "hnsw16@d64" and reader.info()["index_bytes_per_vector"] > 64 * 4


@pytest.mark.parametrize("damage", ["delete", "truncate", "junk"])
def test_a_damaged_index_file_does_not_lock_the_collection(indexed, scifact, damage):
    _, docs, queries = scifact
    graph = index_file(indexed, "hnsw.faiss")
    if damage == "delete":
        graph.unlink()
    elif damage == "truncate":
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    else:
        graph.write_bytes(np.random.default_rng(0).bytes(graph.stat().st_size))
    with Collection.open(indexed) as col:
        exact = col.search(queries[:5], k=5)  # exact search and the other index still serve
        probed = col.search(queries[:5], k=5, plan="p32@d64:100>d384")
        assert_same_ranking(probed.ids, probed.scores, exact.ids, exact.scores)
        with pytest.raises(CollectionError, match=r"needs a graph index, which is unusable: .*hnsw.faiss.*"
                                                  r"matsearch build"):
            col.search(queries[0], plan="g16@d64:50>d384")
        assert "hnsw.faiss" in col.info()["unusable_indexes"]["a graph index"]
    with Collection.open(indexed, writable=True) as col:
        col.build(RECIPE)
    with Collection.open(indexed) as col:
        assert col.info()["unusable_indexes"] == {}
        assert col.search(docs[7], k=1, plan="g16@d64:50>d384").ids[0, 0] == col.search(docs[7], k=1).ids[0, 0]


def test_bad_recipes_build_nothing(indexed):
    with Collection.open(indexed, writable=True) as col:
        with pytest.raises(InvalidInputError, match="malformed recipe 'ivf@d32'"):
            col.build("ivf@d32")
        with pytest.raises(InvalidInputError, match="scan dim must be one of the nesting dims"):
            col.build("ivf32@d32:d100")
        assert col.manifest.recipe == RECIPE


def test_added_rows_join_the_indexes(indexed, scifact):
    ids, docs, _ = scifact
    with Collection.open(indexed, writable=True) as col:
        col.add(ids[4000:4100], vectors=docs[4000:4100])
        assert all(index.indexed_ == 4100 for index in col._indexes.values())
        with Collection.open(indexed) as reader:  # the files still cover 4000 rows; opening extends them
            assert reader._saved_rows == {"p": 4000, "g": 4000}
            assert all(index.indexed_ == 4100 for index in reader._indexes.values())
            assert reader.search(docs[4077], k=1, plan="g16@d64:20>d384").ids[0, 0] == ids[4077]
            assert reader.search(docs[4077], k=1, plan="p2@d64:20>d384").ids[0, 0] == ids[4077]
    with Collection.open(indexed) as col:  # the writer's close saved the grown indexes
        assert col._saved_rows == {"p": 4100, "g": 4100}


def test_an_int8_graph_linked_on_a_short_prefix_follows_adds_deletes_and_reopens(tmp_path, scifact):
    ids, docs, queries = scifact
    with Collection.create(tmp_path / "col") as col:
        col.add(ids[:3000], vectors=docs[:3000])
        col.build("hnsw16@d32:d128/int8")
        col.add(ids[3000:3500], vectors=docs[3000:3500])
        col.delete(ids[:20])
        walked = col.search(queries[:30], k=10, plan="g3480@d128:3480>d384")
        exact = col.search(queries[:30], k=10)
        assert_same_ranking(walked.ids, walked.scores, exact.ids, exact.scores)
        before = col.search(queries, k=10, plan="g16@d128:16>d384")
    with Collection.open(tmp_path / "col") as col:  # closing saved the graph with the 500 added rows linked
        assert col.manifest.recipe == "hnsw16@d32:d128/int8"
        assert col._indexes["g"].indexed_ == col._saved_rows["g"] == 3500
        np.testing.assert_array_equal(col.search(queries, k=10, plan="g16@d128:16>d384").ids, before.ids)
        exact = col.search(queries, k=10)
        walked = col.search(queries[:30], k=10, plan="g3480@d128:3480>d384")
        assert_same_ranking(walked.ids, walked.scores, exact.ids[:30], exact.scores[:30])
        short = col.search(queries, k=10, plan="g64@d128:64>d384").ids
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(short, exact.ids)]) >= 0.95
        assert not set(col.search(docs[:20], k=3, plan="g32@d128:32>d384").ids.ravel()) & set(ids[:20])


@pytest.mark.parametrize("codec", ["pq16", "pq64x4fs"])
def test_ivf_pq_with_a_second_centroid_set_follows_adds_deletes_and_reopens(tmp_path, scifact, codec):
    ids, docs, queries = scifact
    with Collection.create(tmp_path / "col") as col:
        col.add(ids[:3000], vectors=docs[:3000])
        col.build(f"ivf32@d64+d32:d128/{codec}")
        col.add(ids[3000:3500], vectors=docs[3000:3500])
        col.delete(ids[:20])
        every_list = col.search(queries[:30], k=10, plan="p32c32@d128:3480>d384")
        exact = col.search(queries[:30], k=10)
        assert_same_ranking(every_list.ids, every_list.scores, exact.ids, exact.scores)
        before = col.search(queries, k=10, plan="p8@d128:100>d384").ids
    with Collection.open(tmp_path / "col") as col:
        assert col.manifest.recipe == f"ivf32@d64+d32:d128/{codec}"
        np.testing.assert_array_equal(col.search(queries, k=10, plan="p8@d128:100>d384").ids, before)
        exact = col.search(queries, k=10).ids
        short = col.search(queries, k=10, plan="p8c32@d128:100>d384").ids
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(short, exact)]) >= 0.85
        assert not set(col.search(docs[:20], k=3, plan="p4@d128:32>d384").ids.ravel()) & set(ids[:20])
