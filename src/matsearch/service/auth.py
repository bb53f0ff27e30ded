"""Who may call what: reads need the key only on a private service, writes whenever a key is set.

The checks are coroutines: they never block, and a plain function would cost each request a trip to the
thread pool."""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .settings import Settings

bearer = HTTPBearer(auto_error=False, description="The service's API key, when it has one: Authorization: Bearer KEY")


def _check_key(settings: Settings, credentials: HTTPAuthorizationCredentials | None, what: str) -> None:
    if credentials is None:
        raise HTTPException(401, f"{what} needs the API key: send the header 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.encode(), settings.api_key.encode()):
        raise HTTPException(401, "the API key is wrong", headers={"WWW-Authenticate": "Bearer"})


async def require_read(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    settings: Settings = request.app.state.settings
    if settings.private:
        _check_key(settings, credentials, "reading from this private service")


async def require_write(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    settings: Settings = request.app.state.settings
    if settings.api_key is not None:
        _check_key(settings, credentials, "a write")
    if settings.read_only:
        raise HTTPException(403, "this service is read-only (--read-only): writes are refused")
