"""The retrieval tool for language-model agents: an MCP server over the collections under a folder.

Tools: `list_collections`, `search` and `get`, each answering with passages (id, score, text, metadata) so that
an agent can use a collection as its memory. Collections are named and opened as the HTTP service does (a
read-only `Registry`: safe names, folders inside the root only, each opened once); a reader sees what a writer
elsewhere commits. `matsearch mcp ROOT` serves it over stdio.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from ..errors import CollectionError, MatsearchError
from .registry import MissingCollection, Registry
from .routes.search import records_of

log = logging.getLogger(__name__)

MAX_K = 100
MAX_IDS = 100
MAX_QUERY_CHARS = 2_000

INSTRUCTIONS = ("Semantic search over document collections. Call list_collections to see what is there, "
                "search(collection, query) for the passages most relevant to a question, and get(collection, ids) "
                "to read passages by id again.")


class Passage(BaseModel):
    """One stored item as an agent reads it."""

    id: str
    score: float | None = Field(None, description="Relevance, higher is better (None for a passage read by id).")
    text: str | None
    metadata: dict[str, Any] | None


class SearchAnswer(BaseModel):
    """The passages a search found, best first, and what the search did to find them."""

    passages: list[Passage]
    plan: str = Field(description="The plan the search ran (and the target that chose it, if any).")
    mode: str = Field(description="dense, lexical or hybrid.")
    cost: dict[str, Any] = Field(description="Work per query: multiply_adds, bytes_read, candidates per stage…")
    took_ms: float


class CollectionSummary(BaseModel):
    name: str
    count: int
    dim: int | None
    model: str | None = Field(description="The encoder behind text queries (None: searched by vector only).")
    calibrated: bool = Field(description="Whether target_recall can be given.")


def create_server(root) -> MCPServer:
    """An MCP server whose tools search and read the collections under `root`."""
    collections = Registry(root, read_only=True)
    server = MCPServer("matsearch", instructions=INSTRUCTIONS)

    @server.tool()
    def list_collections() -> list[CollectionSummary]:
        """The collections that can be searched, with their sizes and whether they take a target_recall."""
        with _tool_errors():
            return [summary for name in collections.names() if (summary := _summary(collections, name))]

    @server.tool()
    def search(
        collection: str,
        query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, description="A question or text.")],
        k: Annotated[int, Field(ge=1, le=MAX_K, description="How many passages to return.")] = 10,
        filter: Annotated[dict[str, Any] | None, Field(
            description='Metadata filter, e.g. {"year": {"$gte": 2020}} ($eq $ne $gt $gte $lt $lte $in $nin '
                        '$exists $and $or $not; a bare value means $eq).')] = None,
        target_recall: Annotated[float | None, Field(
            gt=0, le=1, description="Recall@k to reach against exact search (calibrated collections).")] = None,
    ) -> SearchAnswer:
        """The passages of a collection most relevant to a query, best first."""
        with _tool_errors(), collections.reading(collection) as col:
            start = time.perf_counter()
            result = col.search(query, k=k, filter=filter, target_recall=target_recall)
            took_ms = (time.perf_counter() - start) * 1e3
            hits = [(i, float(s)) for i, s in zip(result.ids[0].tolist(), result.scores[0].tolist()) if i is not None]
            records = records_of(col, [i for i, _ in hits])  # a hit deleted since the search is left out
            passages = [Passage(id=i, score=s, text=records[i].text, metadata=records[i].metadata)
                        for i, s in hits if i in records]
            plan = result.plan if result.target is None else f"{result.plan} ({result.target})"
            return SearchAnswer(passages=passages, plan=plan, mode=result.mode, cost=result.cost.per_query(),
                                took_ms=took_ms)

    @server.tool()
    def get(collection: str,
            ids: Annotated[list[str], Field(min_length=1, max_length=MAX_IDS, description="Ids to read.")]
            ) -> list[Passage]:
        """Passages of a collection by id, in the order asked."""
        with _tool_errors(), collections.reading(collection) as col:
            return [Passage(id=r.id, text=r.text, metadata=r.metadata) for r in col.get(ids)]

    return server


def serve(root) -> None:
    """Run the MCP server for the collections under `root` over stdio until the client hangs up."""
    create_server(root).run("stdio")


def _summary(collections: Registry, name: str) -> CollectionSummary | None:
    """What list_collections says of collection `name` (None if it was dropped meanwhile)."""
    try:
        with collections.reading(name) as col:
            info = col.info()
    except MissingCollection:
        return None
    except CollectionError as exc:  # one damaged or busy collection does not hide the others
        log.warning("collection %r left out of the list: %s", name, exc)
        return None
    calibration = info["calibration"]
    return CollectionSummary(name=name, count=info["count"], dim=info["dim"], model=info["model"],
                             calibrated=bool(calibration) and not calibration.get("stale")
                             and "unreadable" not in calibration)


@contextmanager
def _tool_errors():
    """Turn the library's errors into tool errors whose message the agent reads."""
    try:
        yield
    except MatsearchError as exc:
        raise ToolError(str(exc)) from exc
