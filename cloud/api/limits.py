"""Request bodies are limited before they are read: a body larger than its route may take is refused with 413
from its ``Content-Length``, or as soon as it streams past the limit, and never reaches the route.

The routes that take more than 1 MiB (JSON) are named exactly: update bundles, the registry CSV, photos (work
orders, faces, the console's upload forms). A caller with neither a session cookie nor a bearer token gets 1 MiB
whatever the route: a stranger cannot make the cloud hold a large body before it checks who is asking.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

MiB = 1024 * 1024
LIMITS: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern), n)
    for pattern, n in (
        (r"/api/updates", 64 * MiB),
        (r"/api/assets/import", 32 * MiB),
        (r"/api/residents/[^/]+/faces", 12 * MiB),
        (r"/api/work-orders/\d+/photos", 12 * MiB),
        (r"/console/work-orders/\d+/photo", 12 * MiB),
        (r"/console/m/report", 12 * MiB),
    )
)
DEFAULT_LIMIT = 1 * MiB


def limit_for(path: str, signed_in: bool = True) -> int:
    """The largest body ``path`` takes (anonymous callers: the default, whatever the route)."""
    if not signed_in:
        return DEFAULT_LIMIT
    return next((n for pattern, n in LIMITS if pattern.fullmatch(path)), DEFAULT_LIMIT)


class BodyLimit:
    """ASGI middleware: the body is read here, up to the route's limit, and handed on whole."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        signed_in = b"authorization" in headers or b"ce_session=" in headers.get(b"cookie", b"")
        limit = limit_for(scope["path"], signed_in)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _too_large(send, limit)
            return
        buffer = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            buffer += message.get("body", b"")
            if len(buffer) > limit:
                await _too_large(send, limit)
                return
            if not message.get("more_body", False):
                break
        body = bytes(buffer)
        del buffer
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            nxt: dict[str, Any] = await receive()  # after the body: whatever the server says next (a disconnect)
            return nxt

        await self.app(scope, replay, send)


async def _too_large(send: Any, limit: int) -> None:
    body = orjson.dumps({"error": f"request body larger than {limit // MiB} MiB", "status": 413})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
