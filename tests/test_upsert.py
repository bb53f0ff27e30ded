"""Upserts and metadata updates: an id always has exactly one live version, the one last committed."""

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from matsearch import Collection, InvalidInputError
from matsearch.matryoshka import normalize

N = 1000
PLANS = ["d384", "d32:300>d384", "p16@d64:300>d384", "g200@d64:300>d384"]


def texts_of(n):
    return [f"document {i} word{i}" for i in range(n)]


@pytest.fixture
def filled(tmp_path, scifact):
    """1,000 SciFact vectors with texts and metadata, IVF and graph indexes, no model (searched by vector)."""
    _, docs, _ = scifact
    path = tmp_path / "col"
    with Collection.create(path, model=None) as col:
        col.add([f"d{i}" for i in range(N)], vectors=docs[:N], texts=texts_of(N), metadata=[{"n": i} for i in range(N)])
        col.build("ivf16@d64:d128,hnsw16@d64")
    return path


def stored(col, vectors):
    """`vectors` as the collection stores them."""
    return col.transform.apply(normalize(np.atleast_2d(vectors)))


def occurrences(result, id_):
    return [row.count(id_) for row in result.ids.tolist()]


def test_upsert_replaces_vector_text_and_metadata(filled, scifact):
    _, docs, _ = scifact
    with Collection.open(filled, writable=True) as col:
        assert col.upsert(["d5"], vectors=docs[2000:2001], texts=["zebra quagga"], metadata=[{"n": -5}]) == 1
        assert len(col) == N
        record = col.get(["d5"])[0]
        assert (record.text, record.metadata) == ("zebra quagga", {"n": -5})
        np.testing.assert_allclose(record.vector, stored(col, docs[2000])[0], atol=1e-5)
        for plan in PLANS:  # the new vector is found by every plan; the old one is gone
            assert col.search(docs[2000], k=3, plan=plan).ids[0, 0] == "d5", plan
            assert col.search(docs[5], k=3, plan=plan).ids[0, 0] != "d5", plan
        everything = col.search(docs[[5, 2000]], k=N)  # every live item, d5 once, scored by its new vector
        assert occurrences(everything, "d5") == [1, 1] and all(len(set(row)) == N for row in everything.ids.tolist())
        rank = everything.ids[0].tolist().index("d5")
        cosine = float(normalize(docs[5:6])[0] @ normalize(docs[2000:2001])[0])
        assert everything.scores[0, rank] == pytest.approx(cosine, abs=1e-5)
        assert col.search("zebra", k=1, mode="lexical").ids[0, 0] == "d5"
        assert col.search("word5", k=1, mode="lexical").ids[0, 0] is None  # the old text matches nothing
        hybrid = col.search("zebra", k=10, mode="hybrid", query_vectors=docs[2000:2001])
        assert hybrid.ids[0, 0] == "d5" and occurrences(hybrid, "d5") == [1]


def test_add_with_upsert_mixes_new_and_existing_ids(filled, scifact):
    _, docs, _ = scifact
    with Collection.open(filled, writable=True) as col:
        col.add(["d6", "new1"], vectors=docs[2001:2003], upsert=True)  # no texts or metadata: those become None
        assert len(col) == N + 1 and col.info()["deleted"] == 1
        six, new = col.get(["d6", "new1"])
        assert (six.text, six.metadata, new.text) == (None, None, None)
        assert col.search(docs[2002], k=1).ids[0, 0] == "new1"
        assert col.search("word6", k=1, mode="lexical").ids[0, 0] is None
        with pytest.raises(InvalidInputError, match=r"ids already in the collection: \['d7'\]; an upsert replaces"):
            col.add(["d7"], vectors=docs[:1])


def test_upserts_persist_and_survive_compaction(filled, scifact):
    _, docs, queries = scifact
    with Collection.open(filled, writable=True) as col:
        for round_ in range(3):  # the same ids replaced again and again
            col.upsert([f"d{i}" for i in range(10)], vectors=docs[2000 + 10 * round_: 2010 + 10 * round_],
                       metadata=[{"round": round_}] * 10)
        before = col.search(queries[:20], k=10)
        assert len(col) == N and col.info()["deleted"] == 30
    with Collection.open(filled) as col:
        again = col.search(queries[:20], k=10)
        np.testing.assert_array_equal(again.ids, before.ids)
        assert col.get(["d3"])[0].metadata == {"round": 2} and len(col) == N
        for plan in PLANS:
            assert col.search(docs[2023], k=1, plan=plan).ids[0, 0] == "d3", plan
    with Collection.open(filled, writable=True) as col:
        assert col.compact()["removed"] == 30
    with Collection.open(filled) as col:
        assert col.info()["stored_rows"] == N and len(col) == N
        np.testing.assert_array_equal(col.search(queries[:20], k=10).ids, before.ids)
        np.testing.assert_allclose(col.get(["d3"])[0].vector, stored(col, docs[2023])[0], atol=1e-5)


def test_bad_upserts_and_updates_are_errors_naming_the_id_and_change_nothing(filled, scifact):
    _, docs, _ = scifact
    with Collection.open(filled, writable=True) as col:
        with pytest.raises(InvalidInputError, match=r"duplicate ids in one call: \['d1'\]"):
            col.upsert(["d1", "d2", "d1"], vectors=docs[2000:2003])
        with pytest.raises(InvalidInputError, match=r"ids not in the collection: \['nope'\]"):
            col.update_metadata(["d1", "nope"], [{"x": 1}, {"x": 2}])
        with pytest.raises(InvalidInputError, match="got 1 metadata for 2 ids"):
            col.update_metadata(["d1", "d2"], [{"x": 1}])
        with pytest.raises(InvalidInputError, match=r"metadata\[1\] must be a dict or None, got str"):
            col.update_metadata(["d1", "d2"], [{"x": 1}, "x"])
        with pytest.raises(InvalidInputError, match=r"metadata\[0\] is None; merge=True needs a dict"):
            col.update_metadata(["d1"], [None], merge=True)
        with pytest.raises(InvalidInputError, match="got 2 vectors for 1 ids"):
            col.upsert(["d1"], vectors=docs[:2])
        assert len(col) == N and col.info()["deleted"] == 0
        assert [r.metadata for r in col.get(["d1", "d2"])] == [{"n": 1}, {"n": 2}]
        assert col.search(docs[1], k=1).ids[0, 0] == "d1"


def test_update_metadata_replaces_or_merges_in_place(filled, scifact):
    _, docs, _ = scifact
    with Collection.open(filled, writable=True) as col, Collection.open(filled) as reader:
        assert reader.get(["d1"])[0].metadata == {"n": 1}
        assert col.update_metadata(["d1", "d2"], [{"tag": "a"}, None]) == 2  # replace (None clears)
        assert [r.metadata for r in reader.get(["d1", "d2"])] == [{"tag": "a"}, None]
        col.update_metadata(["d1", "d2", "d3"], {"lang": "en"}, merge=True)  # one dict for every id
        assert [r.metadata for r in col.get(["d1", "d2", "d3"])] == [{"tag": "a", "lang": "en"}, {"lang": "en"},
                                                                     {"n": 3, "lang": "en"}]
        assert col.info()["stored_rows"] == N and col.info()["deleted"] == 0  # no new rows
        record = col.get(["d1"])[0]
        assert record.text == "document 1 word1"
        np.testing.assert_allclose(record.vector, stored(col, docs[1])[0], atol=1e-5)
        assert col.search(docs[1], k=1, plan="p16@d64:300>d384").ids[0, 0] == "d1"
    with Collection.open(filled) as col:
        assert col.get(["d1"])[0].metadata == {"tag": "a", "lang": "en"}


def test_a_reader_sees_the_old_or_the_new_version(filled, scifact):
    """A reader searching while the writer flips d5 between two versions sees d5 once, whole, in one version."""
    _, docs, _ = scifact
    versions = docs[[2000, 2001]]
    problems, reads, done = [], [], threading.Event()
    with Collection.open(filled) as reader:
        want = stored(reader, versions)

        def read():
            while not done.is_set():
                reads.append(len(reads))
                try:
                    record = reader.get(["d5"])[0]
                    v = record.metadata["v"] % 2
                    if record.text != f"version {v}" or not np.allclose(record.vector, want[v], atol=1e-5):
                        problems.append(("get", record.text, record.metadata))
                    result = reader.search(versions, k=10, plan="p16@d64:2000>d384")  # d5 tops one: its version
                    tops = [row[0] == "d5" for row in result.ids.tolist()]
                    if sum(tops) != 1 or max(occurrences(result, "d5")) > 1 or len(reader) != N:
                        problems.append(("search", tops, occurrences(result, "d5"), len(reader)))
                except Exception as exc:  # noqa: BLE001 - any failure is a finding
                    problems.append((type(exc).__name__, str(exc)))

        with Collection.open(filled, writable=True) as col:
            col.upsert(["d5"], vectors=versions[:1], texts=["version 0"], metadata=[{"v": 0}])
            thread = threading.Thread(target=read)
            thread.start()
            n = 0
            while n < 100 or (len(reads) < 30 and n < 3000):  # until the reader has read many times
                n += 1
                col.upsert(["d5", f"d{n % 900 + 6}"], vectors=np.stack([versions[n % 2], docs[n % 900 + 6]]),
                           texts=[f"version {n % 2}", None], metadata=[{"v": n}, None])
            done.set()
            thread.join()
    assert not problems, problems[:5]
    assert len(reads) >= 20


def test_cli_index_upsert(tmp_path, scifact):
    _, docs, _ = scifact
    corpus, vectors, path = tmp_path / "docs.jsonl", tmp_path / "vectors.npy", tmp_path / "col"

    def index(rows, *extra, ok=True):
        corpus.write_text("".join(json.dumps({"_id": i, "text": t, "year": y}) + "\n" for i, t, y, _ in rows))
        np.save(vectors, np.stack([v for *_, v in rows]))
        proc = subprocess.run([sys.executable, "-m", "matsearch", "index", corpus, "--collection", path, "--vectors",
                               vectors, "--transform", "none", "--json", *extra], capture_output=True, text=True)
        assert (proc.returncode == 0) == ok, proc.stderr
        return json.loads(proc.stdout) if ok else proc.stderr

    first = index([(f"p{i}", f"paper {i}", 2000, docs[i]) for i in range(5)])
    assert (first["added"], first["replaced"], first["count"]) == (5, 0, 5)
    again = [("p1", "paper one, revised", 2024, docs[100]), ("p9", "paper 9", 2024, docs[9])]
    out = index(again)  # without --upsert an id already there is skipped (a re-run resumes)
    assert (out["added"], out["skipped"], out["count"]) == (1, 1, 6)
    with Collection.open(path) as col:
        assert col.get(["p1"])[0].text == "paper 1"
    out = index(again, "--upsert")
    assert (out["added"], out["replaced"], out["skipped"], out["count"]) == (2, 2, 0, 6)  # p9 came in just now
    with Collection.open(path) as col:
        record = col.get(["p1"])[0]
        assert (record.text, record.metadata) == ("paper one, revised", {"year": 2024})
        assert col.search(docs[100], k=1).ids[0, 0] == "p1"


def test_a_failed_upsert_commit_keeps_the_old_version(filled, scifact, monkeypatch):
    _, docs, _ = scifact
    with Collection.open(filled, writable=True) as col:
        monkeypatch.setattr(col._docs, "upsert", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            col.upsert(["d1", "new"], vectors=docs[2000:2002])
        monkeypatch.undo()
        assert col._store.count == N and len(col) == N
        assert col.search(docs[1], k=1).ids[0, 0] == "d1" and col.get(["d1"])[0].metadata == {"n": 1}
    with Collection.open(filled) as col:
        assert col.info()["stored_rows"] == N and col.search(docs[2000], k=1).ids[0, 0] != "d1"
