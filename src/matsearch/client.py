"""A served collection with the methods of `Collection`, over HTTP (`matsearch serve`).

    from matsearch.client import Client

    col = Client("http://127.0.0.1:8000", api_key=key).open("papers")   # was: Collection.open("papers")
    result = col.search(query_vector, k=10, target_recall=0.95)
    result.ids, result.scores, result.texts, result.metadata, result.cost

Errors are the library's: `InvalidInputError` for a request the service refused as bad input (400, 413, 422),
`CollectionError` for a collection missing, busy or read-only (403, 404, 409); `ServiceError` for the rest (a
missing or wrong key, a server fault, no answer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import numpy as np

from .collection import Record
from .encoder import DEFAULT_MODEL
from .errors import CollectionError, InvalidInputError, MatsearchError
from .results import Cost, SearchResult

_BAD_INPUT, _COLLECTION = {400, 413, 422}, {403, 404, 409}
_POLL_SECONDS = 0.2


class ServiceError(MatsearchError):
    """The service refused a request for a reason other than its input or the collection (`status`: the HTTP
    code, 0 when there was no answer)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class JobFailed(MatsearchError):
    """A background job (build, compact, tune) ended in failure; the message is the service's reason."""


@dataclass(slots=True)
class ServedResult(SearchResult):
    """A `SearchResult` with the stored text and metadata of each hit (lists per query, as `ids`)."""

    texts: list[list[str | None]] = field(default_factory=list)
    metadata: list[list[dict | None]] = field(default_factory=list)


class Client:
    """The collections a service holds. `url`: where it listens; `api_key`: sent as a Bearer token."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 300.0):
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def create(self, name: str, *, model: str | None = DEFAULT_MODEL, metric: str = "cosine",
               transform: str = "pca", dim: int | None = None) -> "RemoteCollection":
        """A new, empty collection (`Collection.create`), open for writing."""
        self.call("POST", "/v1/collections", json={"name": name, "model": model, "metric": metric,
                                                    "transform": transform, "dim": dim})
        return RemoteCollection(self, name, writable=True)

    def open(self, name: str, *, writable: bool = False) -> "RemoteCollection":
        """An existing collection (`Collection.open`); writes need `writable=True`, as in the library."""
        self.call("GET", f"/v1/collections/{quote(name, safe='')}")
        return RemoteCollection(self, name, writable=writable)

    def collections(self) -> list[dict]:
        """Every collection the service holds, with its info."""
        return self.call("GET", "/v1/collections")["collections"]

    def drop(self, name: str) -> None:
        """Delete a collection and its folder."""
        self.call("DELETE", f"/v1/collections/{quote(name, safe='')}")

    def call(self, method: str, path: str, **request) -> dict:
        """One request; the JSON answer, or the error the service named, as a matsearch exception."""
        try:
            response = self._http.request(method, path, **request)
        except httpx.HTTPError as exc:
            raise ServiceError(f"{method} {self.url}{path} got no answer: {exc}") from None
        if response.is_success:
            return response.json()
        try:
            detail = response.json()["detail"]
        except (ValueError, KeyError, TypeError):
            detail = response.text[:200] or response.reason_phrase
        error = f"{detail} ({method} {path}: {response.status_code})"
        if response.status_code in _BAD_INPUT:
            raise InvalidInputError(error)
        if response.status_code in _COLLECTION:
            raise CollectionError(error)
        raise ServiceError(error, response.status_code)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RemoteCollection:
    """One served collection: `add`, `upsert`, `delete`, `get`, `search`, `info`, `build`, `compact`, `tune`."""

    def __init__(self, client: Client, name: str, *, writable: bool):
        self.client, self.name, self.writable = client, name, writable
        self._path = f"/v1/collections/{quote(name, safe='')}"

    def add(self, ids, *, texts=None, vectors=None, metadata=None, upsert: bool = False,
            batch_size: int | None = None) -> int:
        """Add items (vectors, or texts the service embeds), all or none. With `batch_size`, in requests of that
        many items, each committed on its own (a failure leaves the batches before it written)."""
        self._require_writable()
        ids = [ids] if isinstance(ids, str) else list(ids)
        vectors = None if vectors is None else np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        step = batch_size or max(len(ids), 1)
        added = 0
        for start in range(0, len(ids), step):
            part = range(start, min(start + step, len(ids)))
            documents = [_document(ids[n], texts, vectors, metadata, n) for n in part]
            added += self.client.call("POST", f"{self._path}/documents",
                                      json={"documents": documents, "upsert": upsert})["added"]
        return added

    def upsert(self, ids, *, texts=None, vectors=None, metadata=None, batch_size: int | None = None) -> int:
        """Add items, replacing whole any whose id is already there: `add(..., upsert=True)`."""
        return self.add(ids, texts=texts, vectors=vectors, metadata=metadata, upsert=True, batch_size=batch_size)

    def delete(self, ids) -> int:
        """Remove items by id, all or none."""
        self._require_writable()
        ids = [ids] if isinstance(ids, str) else list(ids)
        return self.client.call("POST", f"{self._path}/delete", json={"ids": ids})["deleted"]

    def get(self, ids) -> list[Record]:
        """Stored records for `ids`, in the order asked (text and metadata; the vector stays on the server)."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        found = [self.client.call("GET", f"{self._path}/documents/{quote(i, safe='')}") for i in ids]
        return [Record(d["id"], d["text"], d["metadata"], None) for d in found]

    def search(self, queries, *, k: int = 10, plan: str | None = None, mode: str | None = None,
               fusion: str | None = None, query_vectors=None, target_recall: float | None = None,
               max_ms: float | None = None, max_cost: float | None = None, filter=None,
               parents: bool = False) -> ServedResult:
        """Top-k per query, as `Collection.search`: `queries` a text, a list of texts, or vectors (1-D or 2-D);
        one request per query."""
        options = {"k": k, "plan": plan, "mode": mode, "fusion": fusion, "target_recall": target_recall,
                   "max_ms": max_ms, "max_cost": max_cost, "filter": filter, "parents": parents}
        options = {key: value for key, value in options.items() if value is not None}
        texts = [queries] if isinstance(queries, str) else list(queries) if _is_texts(queries) else None
        if texts is None:
            vectors = np.atleast_2d(np.asarray(queries, dtype=np.float32))
            bodies = [{"vector": v.tolist(), **options} for v in vectors]
        else:
            given = None if query_vectors is None else np.atleast_2d(np.asarray(query_vectors, dtype=np.float32))
            bodies = [{"query": t, **options, **({} if given is None else {"vector": given[n].tolist()})}
                      for n, t in enumerate(texts)]
        return _stacked([self.client.call("POST", f"{self._path}/search", json=body) for body in bodies])

    def info(self) -> dict:
        """Counts, dims, bytes per vector, calibration and its frontier, as `Collection.info`."""
        return self.client.call("GET", self._path)

    def __len__(self) -> int:
        return self.info()["count"]

    def build(self, recipe: str | None = None, *, wait: bool = True) -> str:
        """Build the recipe's indexes (default: the collection's recipe again) as a job on the service; the
        recipe built, or with `wait=False` the job's id."""
        job = self._job({"kind": "build", **({} if recipe is None else {"recipe": recipe})}, wait)
        return job if not wait else job["recipe"]

    def compact(self, *, wait: bool = True) -> dict | str:
        """Drop deleted rows from the store and indexes, as a job; what it removed (or the job's id)."""
        return self._job({"kind": "compact"}, wait)

    def tune(self, *, sample: int = 1000, k: int = 10, pseudo: str = "auto", wait: bool = True) -> dict | str:
        """Calibrate on pseudo-queries, as a job; the number of points measured and the frontier (or the job's id)."""
        return self._job({"kind": "tune", "sample": sample, "k": k, "pseudo": pseudo}, wait)

    def job(self, job_id: str) -> dict:
        """A job's state, progress and result."""
        return self.client.call("GET", f"/v1/jobs/{job_id}")

    def close(self) -> None:
        """Nothing to release: the service keeps the collection open."""

    def __enter__(self) -> "RemoteCollection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _job(self, request: dict, wait: bool):
        self._require_writable()
        job_id = self.client.call("POST", f"{self._path}/jobs", json=request)["job"]
        if not wait:
            return job_id
        while (job := self.job(job_id))["state"] in ("queued", "running"):
            time.sleep(_POLL_SECONDS)
        if job["state"] == "failed":
            raise JobFailed(f"{request['kind']} of collection {self.name!r} failed: {job['error']}")
        return job["result"]

    def _require_writable(self) -> None:
        if not self.writable:
            raise CollectionError(f"collection {self.name!r} is open read-only: open it with writable=True")


def _is_texts(queries) -> bool:
    return isinstance(queries, (list, tuple)) and len(queries) > 0 and isinstance(queries[0], str)


def _document(doc_id, texts, vectors, metadata, n: int) -> dict:
    document = {"id": doc_id}
    if texts is not None and texts[n] is not None:
        document["text"] = texts[n]
    if vectors is not None:
        document["vector"] = vectors[n].tolist()
    if metadata is not None and metadata[n] is not None:
        document["metadata"] = metadata[n]
    return document


def _stacked(answers: list[dict]) -> ServedResult:
    """One result for several one-query answers: rows padded to the longest with None ids scored -inf."""
    width = max(len(a["results"]) for a in answers)

    def column(key, pad):
        return [[hit[key] for hit in a["results"]] + [pad] * (width - len(a["results"])) for a in answers]

    ids = np.array(column("id", None), dtype=object).reshape(len(answers), width)
    scores = np.array(column("score", -np.inf), dtype=np.float32).reshape(len(answers), width)
    plans, costs = {a["plan"] for a in answers}, [_cost(a["cost"]) for a in answers]
    return ServedResult(ids=ids, scores=scores, plan=plans.pop() if len(plans) == 1 else "; ".join(sorted(plans)),
                        cost=costs[0] if len(costs) == 1 else Cost.added(costs), mode=answers[0]["mode"],
                        target=answers[0]["target"], texts=column("text", None), metadata=column("metadata", None),
                        passages=np.array(column("passage", None), dtype=object).reshape(len(answers), width)
                        if any(hit.get("passage") for a in answers for hit in a["results"]) else None)


def _cost(record: dict) -> Cost:
    return Cost(queries=1, multiply_adds=int(record["multiply_adds"]), bytes_read=int(record["bytes_read"]),
                candidates=list(record["candidates"]), stage_seconds=list(record["stage_seconds"]),
                lists_probed=int(record["lists_probed"]), items_scanned=int(record["items_scanned"]),
                seconds=record["seconds"], matched=record.get("matched"))
