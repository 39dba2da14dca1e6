"""The live channel as Server-Sent Events: ``GET /console/live`` streams what the signed-in user may see
(``event: alarm|device|gate|visitor|workorder``, JSON data), with a keep-alive comment every 15 s. The browser's
EventSource reconnects by itself after a network cut or a server restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from cloud.api.deps import COOKIE, Service
from cloud.auth.scope import sees_event
from cloud.console.app import Session
from cloud.live import CLOSED

router = APIRouter(prefix="/console", include_in_schema=False)
KEEPALIVE_S = 15.0


@router.get("/live")
async def live(request: Request, svc: Service, page: Session) -> StreamingResponse:
    user = page.user
    sub = svc.live.subscribe(lambda ev: sees_event(user, ev), owner=user.id)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n: connected\n\n"
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        ev = await sub.get()
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    token = request.cookies.get(COOKIE)
                    if not token or await asyncio.to_thread(svc.auth.session, token) is None:
                        return  # logged out, expired, disabled, or a new password: the stream ends with the session
                    yield b": keep-alive\n\n"
                    continue
                if ev is CLOSED:
                    return
                kind = str(ev.get("kind", "message")).encode()
                yield b"event: " + kind + b"\ndata: " + orjson.dumps(ev) + b"\n\n"
        finally:
            sub.close()

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
