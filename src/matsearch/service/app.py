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
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from .. import __version__
from . import errors
from .auth import require_read, require_write
from .jobs import Jobs
from .limits import BodyLimit
from .metrics import Metrics, MetricsMiddleware
from .registry import Registry
from .routes import collections, documents, jobs, search, system
from .settings import Settings

ROUTERS = (collections, documents, search, jobs, system)


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
    for module in ROUTERS:
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=system.STATIC, check_dir=False), name="static")
    if settings.cors:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    _document_optional_key(app, settings, [route for module in ROUTERS for route in module.router.routes])
    return app


def _document_optional_key(app: FastAPI, settings: Settings, routes: list[APIRoute]) -> None:
    """Say in /openapi.json that the key may be left out where this service does not ask for it (reads unless
    private, everything without a key)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            for route in routes:
                needs = {d.dependency for d in route.dependencies}
                if (require_write in needs and settings.api_key is not None) or \
                        (require_read in needs and settings.private):
                    continue
                for method in route.methods:
                    operation = schema["paths"].get(route.path_format, {}).get(method.lower(), {})
                    if operation.get("security"):
                        operation["security"] = [{}, *operation["security"]]
        return app.openapi_schema

    app.openapi = openapi


ENVIRONMENT = "MATSEARCH_SERVE"  # JSON settings for the worker processes of `matsearch serve --workers N`


def from_environment() -> FastAPI:
    """The app as `matsearch serve` configured it, for a uvicorn worker process (the key from MATSEARCH_API_KEY)."""
    return create_app(api_key=os.environ.get("MATSEARCH_API_KEY"), **json.loads(os.environ[ENVIRONMENT]))
