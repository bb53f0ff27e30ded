"""matsearch.client.Client against a real server: the same calls, results and errors as an embedded Collection."""

import numpy as np
import pytest
from conftest import assert_same_ranking
from service_support import KEY, live_server, unit_vectors

from matsearch import Collection, CollectionError, InvalidInputError
from matsearch.client import Client, JobFailed, ServedResult, ServiceError


@pytest.fixture
def server(tmp_path):
    (tmp_path / "root").mkdir()
    with live_server(tmp_path / "root", api_key=KEY) as url:
        yield url, tmp_path / "root"


def test_served_collection_answers_as_the_embedded_one(server):
    url, root = server
    vectors, queries = unit_vectors(600), unit_vectors(4, seed=1)
    ids = [f"item-{n}" for n in range(600)]
    with Client(url, api_key=KEY) as client:
        col = client.create("items", model=None, transform="none")
        assert col.add(ids, vectors=vectors, texts=[f"text {n}" for n in range(600)],
                       metadata=[{"n": n} for n in range(600)], batch_size=250) == 600
        assert len(col) == 600 and col.info()["dim"] == 64
        assert col.build("ivf8@d32:d64") == "ivf8@d32:d64"
        served = col.search(queries, k=10, plan="p8@d64:200>d64")
        assert isinstance(served, ServedResult) and served.ids.shape == (4, 10)
        with Collection.open(root / "items") as embedded:  # a reader beside the server's writer
            local = embedded.search(queries, k=10, plan="p8@d64:200>d64")
        assert_same_ranking(served.ids, served.scores, local.ids, local.scores)
        assert served.cost.queries == 4 and served.cost.multiply_adds == local.cost.multiply_adds
        assert served.texts[0][0] == f"text {served.ids[0][0].split('-')[1]}"
        assert served.metadata[1][0] == {"n": int(served.ids[1][0].split("-")[1])}
        assert col.get(["item-5"])[0].metadata == {"n": 5}
        assert col.upsert(["item-5"], vectors=vectors[6:7], texts=["moved"]) == 1
        assert col.get("item-5")[0].text == "moved"
        assert col.delete(["item-7", "item-8"]) == 2
        assert col.compact()["removed"] == 3  # two deleted, one replaced by the upsert
        filtered = col.search(vectors[10], k=3, filter={"n": {"$lt": 20}})
        assert filtered.ids[0][0] == "item-10" and filtered.cost.matched == 17
        assert [c["name"] for c in client.collections()] == ["items"]
        client.drop("items")
        assert client.collections() == []


def test_errors_are_the_library_s(server):
    url, _ = server
    with Client(url, api_key=KEY) as client:
        col = client.create("items", model=None, transform="none")
        col.add(["a", "b"], vectors=unit_vectors(2))
        with pytest.raises(InvalidInputError, match="width 3, expected 64"):
            col.search(np.ones(3), k=1)
        with pytest.raises(InvalidInputError, match="already in the collection"):
            col.add(["a"], vectors=unit_vectors(1))
        with pytest.raises(CollectionError, match="no collection named 'nope'"):
            client.open("nope")
        with pytest.raises(CollectionError, match="open read-only"):
            client.open("items").add(["c"], vectors=unit_vectors(1))
        with pytest.raises(JobFailed, match="build of collection 'items' failed"):
            col.build("ivf8@d16:d16")
    with Client(url) as anonymous:
        assert anonymous.open("items").search(unit_vectors(1), k=1).ids.shape == (1, 1)
        with pytest.raises(ServiceError, match="needs the API key") as refused:
            anonymous.open("items", writable=True).delete(["a"])
        assert refused.value.status == 401
    with pytest.raises(ServiceError, match="got no answer"):
        Client("http://127.0.0.1:9", timeout=2).collections()
