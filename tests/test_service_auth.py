"""The API key: writes need it, reads too on a private service; a read-only service refuses writes; no CORS
unless asked; the key never reaches a log."""

import logging

import pytest
from service_support import AUTH, KEY, documents, seeded, served, unit_vectors

WRITES = [("post", "/v1/collections", {"name": "new", "model": None}),
          ("post", "/v1/collections/vecs/documents", {"documents": documents(unit_vectors(1), 900)}),
          ("post", "/v1/collections/vecs/delete", {"ids": ["d1"]}),
          ("post", "/v1/collections/vecs/jobs", {"kind": "compact"}),
          ("delete", "/v1/collections/vecs", None)]
READS = [("get", "/v1/collections", None), ("get", "/v1/collections/vecs", None),
         ("get", "/v1/collections/vecs/documents/d1", None), ("get", "/metrics", None),
         ("post", "/v1/collections/vecs/search", {"vector": unit_vectors(1)[0].tolist(), "k": 2})]


def call(client, method, path, body, headers=None):
    return client.request(method.upper(), path, json=body, headers=headers or {})


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root").mkdir()
    with served(tmp_path / "root", api_key=KEY) as client:
        seeded(client, n=20)
    return tmp_path / "root"


@pytest.mark.parametrize("method, path, body", WRITES)
def test_writes_need_the_key(root, method, path, body):
    with served(root, api_key=KEY) as client:
        for headers, reason in ((None, "needs the API key"), ({"Authorization": "Bearer wrong"}, "API key is wrong"),
                                ({"Authorization": f"Basic {KEY}"}, "needs the API key")):
            response = call(client, method, path, body, headers)
            assert response.status_code == 401 and reason in response.json()["detail"], response.text
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/collections/vecs").json()["count"] == 20  # nothing written
        assert call(client, method, path, body, AUTH).status_code in (200, 201, 202)


@pytest.mark.parametrize("method, path, body", READS)
def test_reads_need_the_key_only_when_private(root, method, path, body):
    with served(root, api_key=KEY) as client:
        assert call(client, method, path, body).status_code == 200
    with served(root, api_key=KEY, private=True) as client:
        response = call(client, method, path, body)
        assert response.status_code == 401 and "private" in response.json()["detail"]
        assert call(client, method, path, body, AUTH).status_code == 200
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("method, path, body", WRITES)
def test_a_read_only_service_refuses_writes(root, method, path, body):
    with served(root, read_only=True) as client:
        response = call(client, method, path, body)
        assert response.status_code == 403 and "read-only" in response.json()["detail"]
        assert client.get("/v1/collections/vecs").json()["count"] == 20


def test_private_needs_a_key():
    from matsearch.errors import InvalidInputError
    from matsearch.service.app import create_app

    with pytest.raises(InvalidInputError, match="--private needs an API key"):
        create_app(".", private=True)


def test_no_cors_unless_asked(root):
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    with served(root) as client:
        response = client.options("/v1/collections/vecs/search", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-origin" not in client.get("/v1/collections", headers=preflight).headers
    with served(root, cors=["https://example.org"]) as client:
        response = client.options("/v1/collections/vecs/search", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://example.org"
        other = client.options("/v1/collections/vecs/search", headers={**preflight, "Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in other.headers


def test_the_key_is_never_logged(root, caplog):
    with caplog.at_level(logging.DEBUG), served(root, api_key=KEY) as client:
        for method, path, body in READS + WRITES:
            call(client, method, path, body, {"Authorization": f"Bearer {KEY}x"})
            call(client, method, path, body, AUTH)
    assert KEY not in caplog.text
