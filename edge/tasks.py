"""Stopping asyncio tasks for sure.

On Python 3.11 ``asyncio.wait_for`` drops a cancellation that arrives just as the awaited result does: the
coroutine goes on as if nothing happened. Libraries the units rely on use it for every request (pymodbus waits
for each Modbus answer that way), so a unit polling a PLC every few milliseconds can outlive one ``cancel()``
and an agent waiting for it would never stop. ``cancel_and_wait`` cancels again until the tasks are done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("civicedge.edge.tasks")


async def cancel_and_wait(
    *tasks: asyncio.Future[Any], grace_s: float = 1.0, give_up_s: float = 30.0, raise_errors: bool = False
) -> None:
    """Cancel ``tasks`` and wait until each has finished. One still running ``grace_s`` after a cancel (its
    cleanup is done by then) swallowed it and is cancelled again; after ``give_up_s`` a ``RuntimeError`` names the
    tasks that would not stop. A task that had failed on its own is not an error here (its exception stays on the
    task) unless ``raise_errors``: then the first such exception is raised."""
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_s
    first = True
    while pending:
        if not first:
            log.info("a task swallowed its cancellation; cancelling it again", extra={"tasks": _names(pending)})
        for t in pending:
            t.cancel()
        first = False
        _, pending = await asyncio.wait(pending, timeout=grace_s)
        if pending and loop.time() > deadline:
            where = "; ".join(_where(t) for t in pending)
            raise RuntimeError(f"tasks would not stop within {give_up_s:.0f} s: {', '.join(_names(pending))} ({where})")
    failed = [exc for t in tasks if not t.cancelled() and (exc := t.exception()) is not None]
    if failed and raise_errors:
        raise failed[0]


async def run_together(**loops: Coroutine[Any, Any, Any]) -> None:
    """Run the named coroutines as child tasks until one fails or this task is cancelled, then stop the rest
    for sure. ``asyncio.TaskGroup`` cancels its children once and then waits for ever: a child whose
    cancellation ``wait_for`` dropped keeps its parent (and the agent waiting for it) alive. Here the children
    are cancelled again until they end, even while the caller repeats its own cancel. The first child's error
    is raised; a child that returns simply ends."""
    tasks = [asyncio.create_task(coro, name=name) for name, coro in loops.items()]
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
    finally:
        cancelled = False
        while True:
            try:
                await cancel_and_wait(*tasks)
                break
            except asyncio.CancelledError:
                cancelled = True  # the caller cancels again: the children are still stopping; keep at it
        if cancelled:
            raise asyncio.CancelledError


def _where(task: asyncio.Future[Any]) -> str:
    """Where a task that will not stop is waiting (its innermost frames), for the error that names it."""
    if not isinstance(task, asyncio.Task):
        return repr(task)
    frames = task.get_stack(limit=3)
    return " > ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames) or "no frame"


def _names(tasks: set[asyncio.Future[Any]]) -> list[str]:
    return sorted(t.get_name() if isinstance(t, asyncio.Task) else repr(t) for t in tasks)


def raise_if_cancelled(exc: BaseException) -> None:
    """Re-raise a cancellation a library turned into an error of its own (pymodbus answers a cancelled request
    with ``ModbusIOException``): a loop that catches that error must still stop when its task was cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc
