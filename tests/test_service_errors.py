"""Bad input → a 4xx whose one-line JSON detail names the problem; never a 5xx, never a partial write."""

import json
import os

import pytest
from service_support import AUTH, DIM, documents, seeded, served, unit_vectors

from matsearch import Collection
from matsearch.errors import InvalidInputError
from matsearch.service.registry import Registry


@pytest.fixture
def client(tmp_path):
    (tmp_path / "root").mkdir()
    with served(tmp_path / "root", api_key="test-key-5f1c", max_batch=50, max_body=2**20) as c:
        seeded(c, n=40)
        yield c


def raw(client, path: str, body: str):
    return client.post(path, content=body.encode(), headers={**AUTH, "Content-Type": "application/json"})


def assert_refused(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    for word in words:
        assert word in detail, detail


def count(client) -> int:
    return client.get("/v1/collections/vecs").json()["count"]


VECTOR = unit_vectors(1, seed=5)[0].tolist()
SEARCH = "/v1/collections/vecs/search"
ADD = "/v1/collections/vecs/documents"


@pytest.mark.parametrize("body, status, words", [
    ('{"vector": [0.1, ', 422, ["malformed JSON"]),
    ('[1, 2]', 422, ["valid dictionary"]),
    (json.dumps({"vector": [0.5] * 3}), 400, ["width 3", f"expected {DIM}"]),
    (json.dumps({"vector": VECTOR[:-1] + ["NaN"]}).replace('"NaN"', "NaN"), 422, [f"vector[{DIM - 1}]", "finite"]),
    (json.dumps({"vector": VECTOR[:-1] + [1e300]}), 422, [f"vector[{DIM - 1}]", "less than or equal"]),
    (json.dumps({"vector": [0.0] * DIM}), 400, ["vector", "no direction"]),
    (json.dumps({"vector": [1e-30] * DIM}), 400, ["vector", "no direction"]),
    (json.dumps({"vector": VECTOR, "k": 0}), 422, ["k", "greater than or equal to 1"]),
    (json.dumps({"vector": VECTOR, "k": 10**6}), 422, ["k", "less than or equal to 1000"]),
    (json.dumps({"vector": VECTOR, "k": 41}), 400, ["k=41", "40 searchable"]),
    (json.dumps({"vector": VECTOR, "k": "5"}), 422, ["k", "integer"]),
    (json.dumps({"vector": VECTOR, "plan": "d32:zz>d64"}), 400, ["malformed plan", "d32:zz"]),
    (json.dumps({"vector": VECTOR, "plan": "p8@d64:100>d64"}), 400, ["IVF"]),
    (json.dumps({"vector": VECTOR, "filter": {"n": {"$near": 3}}}), 400, ["$near"]),
    (json.dumps({"vector": VECTOR, "mode": "fuzzy"}), 422, ["mode"]),
    (json.dumps({"vector": VECTOR, "target_recall": 0.9}), 400, ["not calibrated", "tune"]),
    (json.dumps({"vector": VECTOR, "plan": f"d{DIM}", "target_recall": 0.9}), 400, ["plan or a target"]),
    (json.dumps({"query": "x" * 5000}), 422, ["query", "4096"]),
    (json.dumps({"query": "heat transfer", "mode": "dense"}), 400, ["no model"]),
    (json.dumps({"k": 3}), 422, ["'query'", "'vector'"]),
    (json.dumps({"vector": VECTOR, "tagret_recall": 0.9}), 422, ["tagret_recall", "not permitted"]),
])
def test_bad_searches_are_refused_naming_the_problem(client, body, status, words):
    assert_refused(raw(client, SEARCH, body), status, *words)


@pytest.mark.parametrize("bad, status, words", [
    ({"id": "x1", "vector": [0.5] * 3}, 400, ["documents[2].vector has 3 values", f"has {DIM}"]),
    ({"id": "x1", "vector": [0.0] * DIM}, 400, ["documents[2].vector", "no direction"]),
    ({"id": "x1"}, 400, ["documents[2]", "no vector"]),
    ({"id": "", "vector": VECTOR}, 422, ["documents[2].id"]),
    ({"id": "d5", "vector": VECTOR}, 400, ["already in the collection", "d5"]),
    ({"id": "x0", "vector": VECTOR}, 400, ["duplicate ids", "x0"]),
    ({"id": "x1", "vector": VECTOR, "metadata": [1, 2]}, 422, ["documents[2].metadata"]),
    ({"id": "x1", "vector": VECTOR, "text": 7}, 422, ["documents[2].text"]),
])
def test_a_bad_document_fails_the_whole_batch(client, bad, status, words):
    good = documents(unit_vectors(2, seed=9), start=1000)
    good[0]["id"] = "x0"
    assert_refused(client.post(ADD, json={"documents": good + [bad]}, headers=AUTH), status, *words)
    assert count(client) == 40 and client.get("/v1/collections/vecs/documents/x0").status_code == 404


def test_a_nan_in_a_batch_is_refused_and_nothing_is_written(client):
    batch = json.dumps({"documents": documents(unit_vectors(3, seed=9), start=1000)})
    assert_refused(raw(client, ADD, batch.replace(str(json.loads(batch)["documents"][2]["vector"][0]), "NaN", 1)),
                   422, "documents[2].vector[0]", "finite")
    assert count(client) == 40


def test_oversized_batches_and_bodies_are_refused(client):
    assert_refused(client.post(ADD, json={"documents": documents(unit_vectors(51, seed=2), 100)}, headers=AUTH),
                   413, "51 documents", "limit of 50")
    assert_refused(raw(client, ADD, json.dumps({"documents": [{"id": "big", "text": "x" * 2**20}]})),
                   413, "limit of 1048576 bytes")
    assert count(client) == 40


def test_unknown_collection_document_and_job(client):
    assert_refused(client.get("/v1/collections/nope"), 404, "no collection named 'nope'")
    assert_refused(client.post("/v1/collections/nope/search", json={"vector": VECTOR}), 404, "'nope'")
    assert_refused(client.post("/v1/collections/nope/documents", json={"documents": documents(unit_vectors(1))},
                               headers=AUTH), 404, "'nope'")
    assert_refused(client.get("/v1/collections/vecs/documents/zz"), 404, "zz")
    assert_refused(client.post("/v1/collections/vecs/delete", json={"ids": ["d1", "zz"]}, headers=AUTH), 404, "zz")
    assert count(client) == 40  # d1 is still there: all or none
    assert_refused(client.post("/v1/collections/nope/jobs", json={"kind": "compact"}, headers=AUTH), 404, "nope")
    assert_refused(client.post("/v1/collections/vecs/jobs", json={"kind": "build", "recipe": "ivf@zz"},
                               headers=AUTH), 400, "ivf@zz")
    assert_refused(client.get("/v1/jobs/123"), 404, "123")


def test_bad_collection_settings(client):
    assert_refused(client.post("/v1/collections", json={"name": "vecs", "model": None}, headers=AUTH), 409,
                   "already exists")
    assert_refused(client.post("/v1/collections", json={"name": "m", "model": "/etc/secrets"}, headers=AUTH), 400,
                   "not offered")
    assert_refused(client.post("/v1/collections", json={"name": "m", "dim": 100}, headers=AUTH), 400, "384")
    assert_refused(client.post("/v1/collections", json={"name": "m", "metric": "hamming"}, headers=AUTH), 422,
                   "metric")


@pytest.mark.parametrize("name", ["../x", "..", "/etc", "a/b", "a b", "x" * 65, "", "é"])
def test_unsafe_names_are_refused_by_the_registry(tmp_path, name):
    with pytest.raises(InvalidInputError, match="not allowed"):
        Registry(tmp_path).path(name)


@pytest.mark.parametrize("name", ["..", "..%2Fx", "%2E%2E", "a%2Fb", "%2Fetc", "x" * 65])
def test_path_escapes_are_refused(client, tmp_path, name):
    before = sorted(os.listdir(tmp_path))
    for response in (client.get(f"/v1/collections/{name}"),
                     client.post(f"/v1/collections/{name}/search", json={"vector": VECTOR}),
                     client.post(f"/v1/collections/{name}/documents", json={"documents": documents(unit_vectors(1))},
                                 headers=AUTH),
                     client.delete(f"/v1/collections/{name}", headers=AUTH)):
        assert 400 <= response.status_code < 500 and isinstance(response.json()["detail"], str), response.text
    for create in ("../x", "..", "/etc", "a/b"):
        assert_refused(client.post("/v1/collections", json={"name": create, "model": None}, headers=AUTH), 422, "name")
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "root") == ["vecs"]


def test_a_symlink_out_of_the_root_is_neither_read_nor_removed(client, tmp_path):
    outside = tmp_path / "outside"
    with Collection.create(outside, model=None, transform="none") as col:
        col.add(["secret"], vectors=unit_vectors(1))
    (tmp_path / "root" / "link").symlink_to(outside)
    assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["vecs"]
    assert_refused(client.get("/v1/collections/link"), 400, "link")
    assert_refused(client.get("/v1/collections/link/documents/secret"), 400, "link")
    assert_refused(client.post("/v1/collections/link/search", json={"vector": VECTOR}), 400, "link")
    assert_refused(client.delete("/v1/collections/link", headers=AUTH), 400, "link")
    assert_refused(client.post("/v1/collections", json={"name": "link", "model": None}, headers=AUTH), 400, "link")
    with Collection.open(outside) as col:
        assert len(col) == 1
