"""The live channel: what happens (alarms raised and cleared, devices going online/offline, gate decisions,
visitor requests, operator actions) pushed to every open console, each seeing only what its user may see.

Producers call :meth:`LiveHub.publish` from any thread (ingestion workers, request handlers); each console
connection holds a :class:`Subscription` whose bounded queue lives on the server's event loop. A console too
slow to keep up loses the oldest events and is told to refresh (``{"kind": "resync"}``) instead of holding
memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from cloud.metrics import Metrics

Event = dict[str, Any]
QUEUE_MAX = 500
CLOSED: Event = {"kind": "closed"}


class Subscription:
    def __init__(
        self, hub: LiveHub, accept: Callable[[Event], bool], loop: asyncio.AbstractEventLoop, owner: int | None = None
    ) -> None:
        self.hub = hub
        self.owner = owner  # the user whose console reads it
        self.accept = accept
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_MAX)

    def _put(self, ev: Event) -> None:  # on the subscriber's loop
        if self.queue.full():
            while not self.queue.empty():
                self.queue.get_nowait()
            self.hub.metrics.inc("ce_live_dropped_total", 1, "live events dropped for consoles that fell behind")
            ev = {"kind": "resync"}
        self.queue.put_nowait(ev)

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self.hub._remove(self)


class LiveHub:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()

    def subscribe(self, accept: Callable[[Event], bool], owner: int | None = None) -> Subscription:
        """Called on the event loop that will read the subscription; ``owner``: the user reading it."""
        sub = Subscription(self, accept, asyncio.get_running_loop(), owner)
        with self._lock:
            self._subs.add(sub)
        self.metrics.set("ce_live_subscribers", len(self._subs), "consoles connected to the live channel")
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)
        self.metrics.set("ce_live_subscribers", len(self._subs), "consoles connected to the live channel")

    def publish(self, *events: Event) -> None:
        if not events:
            return
        with self._lock:
            subs = list(self._subs)
        self.metrics.inc("ce_live_events_total", len(events), "events published on the live channel")
        for sub in subs:
            for ev in events:
                try:
                    if not sub.accept(ev):
                        continue
                    sub.loop.call_soon_threadsafe(sub._put, ev)
                except RuntimeError:  # that loop has closed: the console is gone
                    self._remove(sub)
                    break

    def end_user(self, user_id: int) -> int:
        """End the streams of one user (disabled, or their password changed): at once, not at their next page."""
        with self._lock:
            subs = [s for s in self._subs if s.owner == user_id]
        for sub in subs:
            with contextlib.suppress(RuntimeError):
                sub.loop.call_soon_threadsafe(sub._put, CLOSED)
        return len(subs)

    def close(self) -> None:
        """Tell every console stream to end (the server is stopping)."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # that loop has closed already
                sub.loop.call_soon_threadsafe(sub._put, CLOSED)
