"""Build, compact and tune as background jobs: an id to poll, a state, and what the job returned or why it failed.

A job runs on a pool thread as a write to its collection (after that collection's other writes, before the next),
so searches go on while it works. One job at a time per collection; finished jobs are kept, the oldest forgotten
past `KEEP`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable

from ..collection import Collection
from ..errors import CollectionError, InvalidInputError, MatsearchError
from ..recipe import Recipe
from .registry import Registry

log = logging.getLogger(__name__)
KEEP = 1_000


class JobConflict(CollectionError):
    """The collection already has a job queued or running (HTTP 409)."""


class MissingJob(CollectionError):
    """No job with that id (HTTP 404)."""


@dataclass
class Job:
    id: str
    kind: str
    collection: str
    state: str = "queued"  # → running → done | failed
    progress: float = 0.0  # 0 until the job ends, then 1 (the library reports no finer steps)
    error: str | None = None
    result: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class Jobs:
    """Background jobs over the collections of `registry`, `threads` at a time."""

    def __init__(self, registry: Registry, *, threads: int = 2):
        self._registry = registry
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="matsearch-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, collection: str, kind: str, *, recipe: str | None = None, sample: int = 1000, k: int = 10,
               pseudo: str = "auto") -> Job:
        """Queue a job of `kind` ("build", "compact" or "tune") on `collection`; its arguments are checked now."""
        work = _work(kind, recipe=recipe, sample=sample, k=k, pseudo=pseudo)
        with self._lock:
            busy = next((j for j in self._jobs.values()
                         if j.collection == collection and j.state in ("queued", "running")), None)
            if busy is not None:
                raise JobConflict(f"collection {collection!r} already has job {busy.id} ({busy.kind}, {busy.state}); "
                                  "wait for it to end")
            job = Job(id=uuid.uuid4().hex, kind=kind, collection=collection)
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP and next(iter(self._jobs.values())).state in ("done", "failed"):
                self._jobs.popitem(last=False)
        self._pool.submit(self._run, job, work)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise MissingJob(f"no job with id {job_id!r}")
        return job

    def shutdown(self) -> None:
        """Drop queued jobs and wait for running ones."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job, work: Callable[[Collection], dict]) -> None:
        job.state = "running"
        try:
            with self._registry.writing(job.collection) as collection:
                job.result = work(collection)
            job.state, job.progress = "done", 1.0
        except MatsearchError as exc:
            job.error, job.state = str(exc), "failed"
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported on the job, never lost in a thread
            log.exception("job %s (%s of %s) failed", job.id, job.kind, job.collection)
            job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"


def _work(kind: str, *, recipe: str | None, sample: int, k: int, pseudo: str) -> Callable[[Collection], dict]:
    if kind == "build":
        if recipe is not None:
            Recipe.parse(recipe)  # a malformed recipe is refused now, not reported by a failed job
        return lambda col: {"recipe": str(col.build(recipe or col.manifest.recipe))}
    if kind == "compact":
        return lambda col: col.compact()
    if kind == "tune":
        return lambda col: _tuned(col.tune(sample=sample, k=k, pseudo=pseudo))
    raise InvalidInputError(f"job kind {kind!r} is not one of build, compact, tune")


def _tuned(calibration) -> dict:
    return {"points": len(calibration.points), "frontier": frontier(calibration)}


def frontier(calibration) -> list[dict]:
    """A calibration's recall-vs-time frontier as plain points (plan, recall, multiply-adds as cost, ms)."""
    return [{"plan": p.plan, "recall": p.recall, "cost": p.multiply_adds, "ms": p.ms}
            for p in calibration.frontier("ms")]
