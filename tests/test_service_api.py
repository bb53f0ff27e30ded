"""Every endpoint of the HTTP service, through FastAPI's TestClient, on small vector collections."""

import time

import numpy as np
import pytest
from conftest import assert_same_ranking, brute_force
from service_support import AUTH, DIM, documents, seeded, served, unit_vectors


@pytest.fixture
def client(tmp_path):
    (tmp_path / "root").mkdir()
    with served(tmp_path / "root", api_key="test-key-5f1c") as c:
        yield c


def wait_for(client, job_id: str) -> dict:
    deadline = time.monotonic() + 60
    while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_create_list_inspect_and_drop(client):
    created = client.post("/v1/collections", json={"name": "papers", "model": None, "metric": "ip", "dim": 24},
                          headers=AUTH)
    assert created.status_code == 201
    info = created.json()
    assert (info["name"], info["count"], info["dim"], info["metric"], info["model"], info["frontier"]) == \
        ("papers", 0, 24, "ip", None, None)
    assert "path" not in info  # no server paths in answers
    assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["papers"]
    assert client.get("/v1/collections/papers").json()["dim"] == 24
    assert client.delete("/v1/collections/papers", headers=AUTH).json() == {"dropped": "papers"}
    assert client.get("/v1/collections").json() == {"collections": []}
    assert client.get("/v1/collections/papers").status_code == 404


def test_add_get_search_and_delete(client):
    vectors = seeded(client)
    doc = client.get("/v1/collections/vecs/documents/d7").json()
    assert doc == {"id": "d7", "text": "document number 7", "metadata": {"n": 7, "even": False}}
    queries = unit_vectors(5, seed=1)
    ref_rows, ref_scores = brute_force(vectors, queries, 10, DIM)
    for q, query in enumerate(queries):
        answer = client.post("/v1/collections/vecs/search", json={"vector": query.tolist(), "k": 10}).json()
        hits = answer["results"]
        assert_same_ranking([[h["id"] for h in hits]], [[h["score"] for h in hits]],
                            [[f"d{r}" for r in ref_rows[q]]], [ref_scores[q]])
        assert hits[0]["text"] == f"document number {ref_rows[q][0]}" and hits[0]["metadata"]["n"] == ref_rows[q][0]
        assert answer["plan"] == f"d{DIM}" and answer["mode"] == "dense" and answer["took_ms"] > 0
        assert answer["cost"]["stages"] == [f"d{DIM}"] and answer["cost"]["multiply_adds"] == 400 * DIM
    top = client.post("/v1/collections/vecs/search", json={"vector": vectors[3].tolist(), "k": 1}).json()
    assert top["results"][0]["id"] == "d3"
    assert client.post("/v1/collections/vecs/delete", json={"ids": ["d3", "d4"]}, headers=AUTH).json() == \
        {"deleted": 2}
    again = client.post("/v1/collections/vecs/search", json={"vector": vectors[3].tolist(), "k": 5}).json()
    assert not {"d3", "d4"} & {h["id"] for h in again["results"]}
    assert client.get("/v1/collections/vecs/documents/d3").status_code == 404
    assert client.get("/v1/collections/vecs").json()["count"] == 398


def test_upsert_replaces_the_document_whole(client):
    vectors = seeded(client, n=50)
    replaced = {"id": "d1", "vector": vectors[2].tolist(), "text": "new text"}
    assert client.post("/v1/collections/vecs/documents", json={"documents": [replaced]}, headers=AUTH).status_code \
        == 400  # an id already there needs upsert
    assert client.post("/v1/collections/vecs/documents", json={"documents": [replaced], "upsert": True},
                       headers=AUTH).json() == {"added": 1}
    assert client.get("/v1/collections/vecs/documents/d1").json() == {"id": "d1", "text": "new text",
                                                                      "metadata": None}
    assert client.get("/v1/collections/vecs").json()["count"] == 50


def test_search_with_filter_lexical_mode_and_a_plan(client):
    vectors = seeded(client)
    query = {"vector": vectors[10].tolist(), "k": 5}
    even = client.post("/v1/collections/vecs/search", json={**query, "filter": {"even": True}}).json()
    assert all(h["metadata"]["even"] for h in even["results"]) and even["cost"]["matched"] == 200
    funnel = client.post("/v1/collections/vecs/search", json={**query, "plan": "d32:100>d64"}).json()
    assert funnel["plan"] == "d32:100>d64" and funnel["cost"]["stages"] == ["d32:100", "d64"]
    assert funnel["results"][0]["id"] == "d10"
    words = client.post("/v1/collections/vecs/search", json={"query": "number 17", "mode": "lexical", "k": 3}).json()
    assert words["mode"] == "lexical" and words["results"][0]["id"] == "d17"


def test_build_tune_and_compact_jobs(client):
    vectors = seeded(client, n=600)
    started = client.post("/v1/collections/vecs/jobs", json={"kind": "build", "recipe": "ivf8@d32:d64"},
                          headers=AUTH)
    assert started.status_code == 202
    job = wait_for(client, started.json()["job"])
    assert (job["state"], job["progress"], job["result"]) == ("done", 1.0, {"recipe": "ivf8@d32:d64"})
    probed = client.post("/v1/collections/vecs/search",
                         json={"vector": vectors[5].tolist(), "k": 3, "plan": "p8@d64:100>d64"}).json()
    assert probed["results"][0]["id"] == "d5" and probed["cost"]["lists_probed"] == 8
    tuned = wait_for(client, client.post("/v1/collections/vecs/jobs",
                                         json={"kind": "tune", "sample": 50, "pseudo": "noise"},
                                         headers=AUTH).json()["job"])
    assert tuned["state"] == "done" and tuned["result"]["points"] > 0, tuned["error"]
    frontier = client.get("/v1/collections/vecs").json()["frontier"]
    assert frontier and set(frontier[0]) == {"plan", "recall", "cost", "ms"}
    targeted = client.post("/v1/collections/vecs/search",
                           json={"vector": vectors[9].tolist(), "k": 3, "target_recall": 0.9}).json()
    assert targeted["target"] is not None
    client.post("/v1/collections/vecs/delete", json={"ids": ["d1", "d2"]}, headers=AUTH)
    compacted = wait_for(client, client.post("/v1/collections/vecs/jobs", json={"kind": "compact"},
                                             headers=AUTH).json()["job"])
    assert compacted["state"] == "done" and compacted["result"]["removed"] == 2
    failed = wait_for(client, client.post("/v1/collections/vecs/jobs", json={"kind": "build", "recipe": "ivf8@d16:d16"},
                                          headers=AUTH).json()["job"])
    assert failed["state"] == "failed" and "d16" in failed["error"]


def test_a_second_job_on_a_collection_waits_its_turn(client, monkeypatch):
    from matsearch import Collection

    seeded(client, n=100)
    original = Collection.compact
    monkeypatch.setattr(Collection, "compact", lambda self, **kw: (time.sleep(0.5), original(self, **kw))[1])
    first = client.post("/v1/collections/vecs/jobs", json={"kind": "compact"}, headers=AUTH).json()["job"]
    second = client.post("/v1/collections/vecs/jobs", json={"kind": "compact"}, headers=AUTH)
    assert second.status_code == 409 and first in second.json()["detail"]
    assert wait_for(client, first)["state"] == "done"
    assert client.get("/v1/jobs/nope").status_code == 404


def test_health_metrics_page_and_schema(client):
    seeded(client, n=20)
    assert client.get("/healthz").json() == {"status": "ok", "collections": 1}
    client.post("/v1/collections/vecs/search", json={"vector": unit_vectors(1)[0].tolist(), "k": 2})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'matsearch_collection_items{collection="vecs"} 20.0' in text
    assert 'matsearch_requests_total{method="POST",route="/v1/collections/{name}/search",status="200"} 1.0' in text
    assert 'matsearch_request_seconds_bucket{le="0.5",method="POST",route="/v1/collections/{name}/search"}' in text
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/collections/{name}/search", "/v1/jobs/{job_id}", "/metrics", "/healthz"} <= set(paths)


def test_added_is_answered_after_commit(client, tmp_path):
    """A second process opening the collection right after the answer sees every document."""
    from matsearch import Collection

    seeded(client, n=30)
    client.post("/v1/collections/vecs/documents", json={"documents": documents(unit_vectors(5, seed=3), 30)},
                headers=AUTH)
    with Collection.open(tmp_path / "root" / "vecs") as col:
        assert len(col) == 35 and col.get(["d34"])[0].text == "document number 34"
