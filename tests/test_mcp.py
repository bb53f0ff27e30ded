"""The MCP retrieval tool: its tools through the mcp library's own in-process client, and once over stdio."""

import asyncio
import shutil
import subprocess
import sys

import numpy as np
import pytest
from mcp import Client, StdioServerParameters

from matsearch import Collection
from matsearch.service.mcp import create_server

QUERY = "heat transfer in hypersonic boundary layers"


@pytest.fixture(scope="module")
def root(tmp_path_factory, calibrated_cranfield):
    """A folder holding Cranfield (texts, MiniLM vectors, metadata, calibrated), a vector-only
    collection, a folder that is no collection and a symlink to a collection outside the folder."""
    root = tmp_path_factory.mktemp("mcp")
    shutil.copytree(calibrated_cranfield, root / "cranfield")
    with Collection.create(root / "vectors-only", model=None, transform="none") as col:
        col.add(["a", "b"], vectors=np.eye(2, 8, dtype=np.float32))
    (root / "not-a-collection").mkdir()
    outside = tmp_path_factory.mktemp("outside")
    with Collection.create(outside / "secret", model=None, transform="none") as col:
        col.add(["s"], vectors=np.ones((1, 8), dtype=np.float32))
    (root / "escape").symlink_to(outside / "secret")
    return root


@pytest.fixture(scope="module")
def call(root):
    """call(tool, **arguments) → the CallToolResult, through an in-process client of one server per module
    (so the collections it opened, and the encoder, stay loaded between tests)."""
    server = create_server(root)

    async def called(tool, arguments):
        async with Client(server) as client:
            return await client.call_tool(tool, arguments)

    return lambda tool, **arguments: asyncio.run(called(tool, arguments))


def test_tools_are_listed_with_their_limits(root):
    async def listed():
        async with Client(create_server(root)) as client:
            return {tool.name: tool for tool in (await client.list_tools()).tools}

    tools = asyncio.run(listed())
    assert set(tools) == {"list_collections", "search", "get"}
    search = tools["search"].input_schema
    assert search["required"] == ["collection", "query"]
    assert search["properties"]["k"]["maximum"] == 100 and search["properties"]["k"]["default"] == 10
    assert tools["search"].output_schema is not None


def test_list_collections_names_only_collections_inside_the_root(call):
    result = call("list_collections")
    assert not result.is_error
    listed = {c["name"]: c for c in result.structured_content["result"]}
    assert set(listed) == {"cranfield", "vectors-only"}  # not the plain folder, not the symlink out
    assert listed["cranfield"]["count"] == 1400 and listed["cranfield"]["calibrated"]
    assert listed["vectors-only"]["model"] is None and not listed["vectors-only"]["calibrated"]


def test_search_returns_the_librarys_passages_with_text_and_metadata(call, root):
    answer = call("search", collection="cranfield", query=QUERY, k=5).structured_content
    with Collection.open(root / "cranfield") as col:
        expected = col.search(QUERY, k=5)
    assert [p["id"] for p in answer["passages"]] == expected.ids[0].tolist()
    assert [p["score"] for p in answer["passages"]] == pytest.approx(expected.scores[0].tolist())
    top = answer["passages"][0]
    assert "heat" in top["text"] and top["metadata"]["number"] == int(top["id"]) - 1
    assert answer["mode"] == "hybrid" and answer["cost"]["multiply_adds"] > 0 and answer["took_ms"] > 0


def test_search_with_a_target_and_a_filter(call):
    answer = call("search", collection="cranfield", query=QUERY, k=10, target_recall=0.9).structured_content
    assert "target_recall=0.9" in answer["plan"] and len(answer["passages"]) == 10
    answer = call("search", collection="cranfield", query=QUERY, k=10,
                  filter={"number": {"$lt": 50}}).structured_content
    assert answer["passages"] and all(p["metadata"]["number"] < 50 for p in answer["passages"])


def test_get_reads_passages_in_the_order_asked(call):
    passages = call("get", collection="cranfield", ids=["12", "3"]).structured_content["result"]
    assert [p["id"] for p in passages] == ["12", "3"]
    assert passages[1]["metadata"]["number"] == 2 and passages[1]["score"] is None and passages[1]["text"]


@pytest.mark.parametrize("name", ["../cranfield", "/etc", "a/b", "..", ".", "", "x" * 65, "escape",
                                  "not-a-collection", "missing"])
def test_unsafe_or_unknown_collection_names_are_errors_naming_them(call, name):
    for tool, arguments in (("search", {"query": QUERY}), ("get", {"ids": ["1"]})):
        result = call(tool, collection=name, **arguments)
        assert result.is_error and repr(name) in result.content[0].text, (tool, result.content)


@pytest.mark.parametrize("arguments, named", [
    ({"collection": "cranfield", "query": QUERY, "k": 0}, "k"),
    ({"collection": "cranfield", "query": QUERY, "k": 101}, "k"),
    ({"collection": "cranfield", "query": ""}, "query"),
    ({"collection": "cranfield", "query": QUERY, "target_recall": 1.5}, "target_recall"),
    ({"collection": "cranfield", "query": QUERY, "filter": {"number": {"$near": 3}}}, "$near"),
    ({"collection": "vectors-only", "query": QUERY}, "model"),
    ({"collection": "vectors-only", "query": QUERY, "target_recall": 0.9}, "tune"),
])
def test_bad_search_arguments_are_errors_naming_the_problem(call, arguments, named):
    result = call("search", **arguments)
    assert result.is_error and named in result.content[0].text, result.content


def test_get_of_a_missing_id_names_it(call):
    result = call("get", collection="cranfield", ids=["1", "no-such-id"])
    assert result.is_error and "no-such-id" in result.content[0].text


def test_matsearch_mcp_serves_over_stdio(root):
    async def over_stdio():
        command = StdioServerParameters(command=sys.executable, args=["-m", "matsearch", "mcp", str(root)])
        async with Client(command) as client:
            listed = await client.call_tool("list_collections", {})
            read = await client.call_tool("get", {"collection": "vectors-only", "ids": ["b"]})
            return listed.structured_content["result"], read.structured_content["result"]

    listed, read = asyncio.run(over_stdio())
    assert {c["name"] for c in listed} == {"cranfield", "vectors-only"}
    assert read == [{"id": "b", "score": None, "text": None, "metadata": None}]


def test_matsearch_mcp_refuses_a_missing_root(tmp_path):
    run = subprocess.run([sys.executable, "-m", "matsearch", "mcp", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "no folder of collections" in run.stderr


def test_a_damaged_collection_does_not_hide_the_others(tmp_path):
    """Found by review: one unreadable manifest failed the whole list (and named the server's path)."""
    with Collection.create(tmp_path / "good", model=None, transform="none") as col:
        col.add(["a", "b"], vectors=np.eye(2, 8, dtype=np.float32))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")

    async def listed():
        async with Client(create_server(tmp_path)) as client:
            return await client.call_tool("list_collections", {})

    result = asyncio.run(listed())
    assert not result.is_error and [c["name"] for c in result.structured_content["result"]] == ["good"]


def test_a_hit_deleted_after_the_search_is_left_out(tmp_path, calibrated_cranfield, monkeypatch):
    shutil.copytree(calibrated_cranfield, tmp_path / "c")
    real_get, deleted = Collection.get, []

    def delete_then_get(self, ids):  # the first read of the hits' texts finds one deleted meanwhile
        if not deleted:
            with Collection.open(tmp_path / "c", writable=True) as writer:
                writer.delete(ids[:1])
            deleted.append(ids[0])
        return real_get(self, ids)

    monkeypatch.setattr(Collection, "get", delete_then_get)

    async def searched():
        async with Client(create_server(tmp_path)) as client:
            return await client.call_tool("search", {"collection": "c", "query": "boundary layer", "k": 3})

    result = asyncio.run(searched())
    assert not result.is_error and deleted
    passages = [p["id"] for p in result.structured_content["passages"]]
    assert len(passages) == 2 and deleted[0] not in passages
