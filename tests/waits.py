"""Waiting for something a component reaches on its own (polled, never a fixed sleep), failing with what was
awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", thread: bool = False) -> Any:
    """Poll ``cond`` until it returns something truthy (returned); ``cond`` may return an awaitable (a coroutine
    reading the outbox, say), which is awaited; ``thread``: call it off the event loop (for conditions that block,
    such as HTTP calls through a test client)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await asyncio.to_thread(cond) if thread else cond()
        if inspect.isawaitable(v):
            v = await v
        if v:
            return v
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def wait(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """:func:`until` for code without an event loop (browser tests, threads)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
