"""The service's own endpoints: health, Prometheus metrics, and the web page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..deps import ERRORS, READ, Collections
from ..schemas import Health

STATIC = Path(__file__).resolve().parents[1] / "static"
PLACEHOLDER = "<!doctype html><title>matsearch</title><p>matsearch is serving; the API is at <a href=/docs>/docs</a>."

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health)
def health(collections: Collections) -> dict:
    """Up, and how many collections it serves."""
    return {"status": "ok", "collections": len(collections.names())}


@router.get("/metrics", dependencies=READ, response_class=Response, responses={
    **{code: ERRORS[code] for code in (401,)}, 200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}})
def metrics(request: Request) -> Response:
    """Request counts, latency histograms and collection sizes, in Prometheus's text format."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
def page():
    """The search page (static/index.html), or a line saying the API is up."""
    index = STATIC / "index.html"
    return FileResponse(index) if index.is_file() else HTMLResponse(PLACEHOLDER)
