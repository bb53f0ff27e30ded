"""The HTTP service: `create_app(root, ...)` serves every collection under `root` (see `matsearch serve`).

A thin face over the library: requests and answers are the models in schemas.py, one router per resource
(routes/), the collections shared through a Registry, library errors mapped to HTTP codes in errors.py.
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from .. import __version__
from . import errors
from .jobs import Jobs
from .limits import BodyLimit
from .metrics import Metrics, MetricsMiddleware
from .registry import Registry
from .routes import collections, documents, jobs, search, system
from .settings import Settings


def create_app(root, *, api_key: str | None = None, read_only: bool = False, private: bool = False,
               cors: list[str] | tuple[str, ...] | None = None, **limits) -> FastAPI:
    """The service over the collections under folder `root`.

    `api_key`: writes need `Authorization: Bearer <key>` (reads too when `private`); `read_only` refuses every
    write; `cors`: browser origins allowed to call (none by default). `limits`: the other `Settings` fields
    (`max_body` bytes and `max_batch` documents per request, `models` a new collection may use, `job_threads`).
    """
    settings = Settings(api_key=api_key, read_only=read_only, private=private, cors=tuple(cors or ()), **limits)
    registry = Registry(root, read_only=read_only)
    background = Jobs(registry, threads=settings.job_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        background.shutdown()
        registry.close()

    app = FastAPI(title="matsearch", version=__version__, lifespan=lifespan,
                  description="Elastic, adaptive semantic search over the collections of one folder.")
    app.state.settings, app.state.registry, app.state.jobs = settings, registry, background
    app.state.metrics = Metrics(registry)
    errors.install(app, f"{registry.root}/")
    for module in (collections, documents, search, jobs, system):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=system.STATIC, check_dir=False), name="static")
    if settings.cors:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


ENVIRONMENT = "MATSEARCH_SERVE"  # JSON settings for the worker processes of `matsearch serve --workers N`


def from_environment() -> FastAPI:
    """The app as `matsearch serve` configured it, for a uvicorn worker process (the key from MATSEARCH_API_KEY)."""
    return create_app(api_key=os.environ.get("MATSEARCH_API_KEY"), **json.loads(os.environ[ENVIRONMENT]))
