"""Background jobs: POST /v1/collections/{name}/jobs starts a build, compaction or calibration; GET /v1/jobs/{id}."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import ERRORS, READ, WRITE, BackgroundJobs, CollectionName, Collections
from ..schemas import Job, JobRequest, JobStarted

router = APIRouter(prefix="/v1", tags=["jobs"], responses=ERRORS)


@router.post("/collections/{name}/jobs", response_model=JobStarted, status_code=202, dependencies=WRITE)
def start_job(name: CollectionName, body: JobRequest, collections: Collections, jobs: BackgroundJobs) -> dict:
    """Queue a build (of `recipe`, default the collection's), a compaction or a calibration (`tune`)."""
    with collections.reading(name):
        pass  # an unknown collection is a 404 now, not a failed job later
    job = jobs.submit(name, body.kind, recipe=body.recipe, sample=body.sample, k=body.k, pseudo=body.pseudo)
    return {"job": job.id}


@router.get("/jobs/{job_id}", response_model=Job, dependencies=READ)
def get_job(job_id: str, jobs: BackgroundJobs) -> dict:
    """A job's state (queued, running, done, failed), progress, and its result or error."""
    return jobs.get(job_id).as_dict()
