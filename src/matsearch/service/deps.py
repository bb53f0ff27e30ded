"""What a route is handed: the app's registry, jobs and settings, and the key checks as dependencies
(coroutines, as they never block: a plain function costs a request a trip to the thread pool)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from .auth import require_read, require_write
from .jobs import Jobs
from .registry import Registry
from .schemas import NAME_PATTERN, Error
from .settings import Settings


async def _registry(request: Request) -> Registry:
    return request.app.state.registry


async def _jobs(request: Request) -> Jobs:
    return request.app.state.jobs


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


Collections = Annotated[Registry, Depends(_registry)]
BackgroundJobs = Annotated[Jobs, Depends(_jobs)]
Config = Annotated[Settings, Depends(_settings)]
CollectionName = Annotated[str, Path(pattern=NAME_PATTERN, description="A collection under the served folder.")]
READ = [Depends(require_read)]
WRITE = [Depends(require_write)]
ERRORS = {code: {"model": Error} for code in (400, 401, 403, 404, 409, 413, 422)}
