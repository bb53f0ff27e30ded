"""A cap on request bodies, checked before a byte is parsed (ASGI middleware)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException


class BodyLimit:
    """Refuse a body over `max_bytes` with 413: at once when its Content-Length says so, else as it streams in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _refuse(send, self._message(declared.decode("latin-1")))
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self._message(f"more than {self.max_bytes}"))
            return message

        await self.app(scope, counted, send)

    def _message(self, size: str) -> str:
        return f"the request body ({size} bytes) is over this service's limit of {self.max_bytes} bytes"


async def _refuse(send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
