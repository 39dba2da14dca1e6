"""Request bodies are limited before they are read: a body larger than its route may take is refused with 413
from its ``Content-Length``, or as soon as it streams past the limit, and never reaches the route.

The limits, longest prefix first: update bundles, the registry CSV, photos (work orders, faces; the console's
upload forms), and 1 MiB for everything else (JSON).
"""

from __future__ import annotations

from typing import Any

import orjson

MiB = 1024 * 1024
LIMITS: tuple[tuple[str, int], ...] = (
    ("/api/updates", 64 * MiB),
    ("/api/assets/import", 32 * MiB),
    ("/api/residents/", 12 * MiB),
    ("/api/work-orders/", 12 * MiB),
    ("/console/", 12 * MiB),
)
DEFAULT_LIMIT = 1 * MiB


def limit_for(path: str) -> int:
    return next((n for prefix, n in LIMITS if path.startswith(prefix)), DEFAULT_LIMIT)


class BodyLimit:
    """ASGI middleware: the body is read here, up to the route's limit, and handed on whole."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["path"])
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _too_large(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
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
