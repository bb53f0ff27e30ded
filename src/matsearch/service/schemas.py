"""The service's requests and responses as pydantic models: the JSON schema at /openapi.json is this file.

Requests are strict (no type coercion, no unknown fields), so a typo or a wrong type is a 422 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..encoder import DEFAULT_MODEL

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_QUERY_CHARS = 4_096
MAX_TEXT_CHARS = 1_000_000
MAX_DIM = 4_096
MAX_K = 1_000
MAX_IDS = 10_000
MAX_VALUE = 1e9  # |coordinate|: squares of larger float32 values overflow a norm

Name = Annotated[str, Field(pattern=NAME_PATTERN, description="Letters, digits, '-' and '_'; at most 64.")]
DocId = Annotated[str, Field(min_length=1, max_length=512)]
Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_VALUE, le=MAX_VALUE)]
Vector = Annotated[list[Coordinate], Field(min_length=1, max_length=MAX_DIM)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Error(BaseModel):
    """Every 4xx (and 5xx) answer: one line naming the problem."""

    detail: str


class CreateCollection(Request):
    name: Name
    model: str | None = Field(DEFAULT_MODEL, min_length=1, max_length=256,
                              description="A model the server offers (default: the bundled encoder), or null for "
                                          "a collection searched by vector only.")
    metric: Literal["cosine", "ip", "l2"] = "cosine"
    dim: int | None = Field(None, ge=2, le=MAX_DIM, description="Vector width; set by the first add when omitted.")
    transform: Literal["pca", "none"] = Field(
        "pca", description="pca is fitted on the first add, which then needs at least dim vectors.")


class Document(Request):
    id: DocId
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    vector: Vector | None = None
    metadata: dict[str, Any] | None = None


class AddDocuments(Request):
    documents: list[Document] = Field(min_length=1)
    upsert: bool = Field(False, description="Replace whole any document whose id is already there.")


class Added(BaseModel):
    added: int


class Ids(Request):
    ids: list[DocId] = Field(min_length=1, max_length=MAX_IDS)


class Deleted(BaseModel):
    deleted: int


class StoredDocument(BaseModel):
    id: str
    text: str | None
    metadata: dict[str, Any] | None


class Search(Request):
    model_config = ConfigDict(json_schema_extra={"anyOf": [  # a query, a vector, or both
        {"required": ["query"], "properties": {"query": {"type": "string"}}},
        {"required": ["vector"], "properties": {"vector": {"type": "array"}}}]})

    query: str | None = Field(None, min_length=1, max_length=MAX_QUERY_CHARS, description="Text to search for.")
    vector: Vector | None = Field(None, description="A query vector (with `query`: its embedding, for hybrid).")
    k: int = Field(10, ge=1, le=MAX_K)
    plan: str | None = Field(None, min_length=1, max_length=512, description="e.g. 'd32:400>d384'.")
    target_recall: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    max_cost: Positive | None = Field(None, description="Multiply-adds per query.")
    max_ms: Positive | None = Field(None, description="Milliseconds, met by 95% of queries.")
    filter: dict[str, Any] | None = Field(None, description='Metadata filter, e.g. {"year": {"$gte": 2020}}.')
    mode: Literal["dense", "lexical", "hybrid"] | None = None
    fusion: str | None = Field(None, min_length=1, max_length=64, description="Hybrid fusion, e.g. 'rrf:k60:n100'.")
    parents: bool = Field(False, description="Rank parent documents by their best passage.")

    @model_validator(mode="after")
    def _has_query(self) -> "Search":
        if self.query is None and self.vector is None:
            raise ValueError("give a 'query' (text) or a 'vector'")
        return self


class Hit(BaseModel):
    id: str
    score: float
    text: str | None
    metadata: dict[str, Any] | None
    passage: str | None = Field(None, description="With parents: the id of the best passage behind this document.")


class Cost(BaseModel):
    stages: list[str]
    candidates: list[float]
    multiply_adds: float
    bytes_read: float
    items_scanned: float
    lists_probed: float
    stage_seconds: list[float]
    seconds: float
    matched: int | None = None


class SearchAnswer(BaseModel):
    results: list[Hit]
    plan: str = Field(description="The plan (or the target's policy) that served the query.")
    mode: str
    target: str | None
    cost: Cost
    took_ms: float


class FrontierPoint(BaseModel):
    plan: str
    recall: float
    cost: float = Field(description="Multiply-adds per query.")
    ms: float


class CollectionInfo(BaseModel):
    """`Collection.info()` and the collection's name; `frontier` once calibrated (`tune`)."""

    model_config = ConfigDict(extra="allow")
    name: str
    count: int
    dim: int | None
    metric: str
    model: str | None
    frontier: list[FrontierPoint] | None


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class Dropped(BaseModel):
    dropped: str


class JobRequest(Request):
    kind: Literal["build", "compact", "tune"]
    recipe: str | None = Field(None, min_length=1, max_length=512,
                               description="build: what to build, e.g. 'ivf256@d64:d192/pq96x4fs' (default: the "
                                           "collection's recipe).")
    sample: int = Field(1000, ge=10, le=10_000, description="tune: pseudo-queries to calibrate on.")
    k: int = Field(10, ge=1, le=100, description="tune: the k recall is measured at.")
    pseudo: Literal["auto", "spans", "noise"] = Field("auto", description="tune: the kind of pseudo-queries.")


class JobStarted(BaseModel):
    job: str


class Job(BaseModel):
    id: str
    kind: str
    collection: str
    state: Literal["queued", "running", "done", "failed"]
    progress: float = Field(ge=0, le=1)
    error: str | None = None
    result: dict[str, Any] | None = None


class Health(BaseModel):
    status: Literal["ok"]
    collections: int
