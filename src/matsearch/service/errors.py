"""Every failure as JSON `{"detail": "<one line>"}`: library errors mapped to HTTP codes in one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import CollectionError, InvalidInputError
from .jobs import JobConflict, MissingJob
from .registry import CollectionExists, MissingCollection

log = logging.getLogger(__name__)

STATUS = [  # first match wins
    (MissingCollection, 404), (MissingJob, 404), (CollectionExists, 409), (JobConflict, 409),
    (InvalidInputError, 400), (CollectionError, 409),
]


class NotFound(InvalidInputError):
    """Input naming something that is not there, such as a document id (HTTP 404)."""


def install(app: FastAPI, root: str) -> None:
    """Register the handlers; `root` (the collections' folder) is cut from messages, which name collections."""

    def answer(status: int, detail: str, headers=None) -> JSONResponse:
        return JSONResponse({"detail": detail.replace(root, "").replace("\n", " ")}, status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return answer(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return answer(422, validation_message(exc.errors()))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        return answer(404, str(exc))

    @app.exception_handler(CollectionError)
    @app.exception_handler(InvalidInputError)
    async def library_error(request: Request, exc: Exception):
        return answer(next(code for kind, code in STATUS if isinstance(exc, kind)), str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return answer(500, f"internal error ({type(exc).__name__}); the server log has the details")


def validation_message(errors) -> str:
    """The first validation error as one line: where, and what is wrong."""
    if not errors:
        return "the request is not valid"
    error = errors[0]
    where = _location(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        return f"malformed JSON at character {where or 0}: {error.get('ctx', {}).get('error', 'not JSON')}"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where or 'request'}: {error.get('msg', 'invalid')}{more}"


def _location(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text
