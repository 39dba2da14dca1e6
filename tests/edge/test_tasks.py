"""Stopping a unit for sure: a cancel that races a Modbus answer is lost on Python 3.11 (``asyncio.wait_for``, as
pymodbus uses it for every request); ``cancel_and_wait`` cancels again until the task has stopped."""

from __future__ import annotations

import asyncio
import sys

import pytest

from edge.tasks import cancel_and_wait, run_together


class Poller:
    """A unit's poll loop in miniature: each request waits for its answer with ``wait_for``."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[int] | None = None
        self.polls = 0
        self.asking = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.answer = loop.create_future()
            self.asking.set()
            await asyncio.wait_for(self.answer, 10)
            self.polls += 1
            self.asking.clear()


async def _cancel_as_the_answer_arrives(p: Poller, task: asyncio.Task[None]) -> None:
    await p.asking.wait()
    assert p.answer is not None
    p.answer.set_result(1)  # the answer arrives ...
    task.cancel()  # ... in the same turn of the loop as the stop


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the race is fixed in 3.12's wait_for")
async def test_a_cancel_that_races_an_answer_is_lost_on_3_11() -> None:
    p = Poller()
    task = asyncio.create_task(p.run())
    await _cancel_as_the_answer_arrives(p, task)
    await asyncio.wait({task}, timeout=0.2)
    assert not task.done() and p.polls >= 1  # the poller went on polling, as the lift unit did
    await cancel_and_wait(task)


async def test_cancel_and_wait_stops_a_task_that_swallowed_the_first_cancel() -> None:
    p = Poller()
    task = asyncio.create_task(p.run())
    await _cancel_as_the_answer_arrives(p, task)
    await cancel_and_wait(task, grace_s=0.1)
    assert task.cancelled()


async def test_cancel_and_wait_leaves_cleanup_alone_and_names_a_task_that_never_stops() -> None:
    cleaned = asyncio.Event()

    async def tidy() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.05)  # closing a port, flushing a file
            cleaned.set()

    t = asyncio.create_task(tidy())
    await asyncio.sleep(0)
    await cancel_and_wait(t, grace_s=1.0)
    assert cleaned.is_set() and t.cancelled()

    relent = False

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if relent:
                    raise

    s = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="stubborn"):
        await cancel_and_wait(s, grace_s=0.05, give_up_s=0.2)
    relent = True
    await cancel_and_wait(s)
    assert s.cancelled()


async def test_a_task_that_failed_on_its_own_is_raised_only_when_asked() -> None:
    async def broken() -> None:
        raise ValueError("the port went away")

    t = asyncio.create_task(broken())
    await asyncio.wait({t})
    await cancel_and_wait(t)  # stopping the agent: the failure was reported when it happened
    with pytest.raises(ValueError, match="port went away"):
        await cancel_and_wait(t, raise_errors=True)  # a test helper: the failure is the test's business


async def test_a_unit_whose_loop_swallowed_the_cancel_still_stops() -> None:
    """``asyncio.TaskGroup`` cancels its children once: a loop that lost that cancel kept the unit (and the
    agent stopping it) waiting for ever. ``run_together`` cancels the children again while its caller does."""
    p = Poller()
    beats = 0

    async def beat() -> None:
        nonlocal beats
        while True:
            beats += 1
            await asyncio.sleep(0.01)

    unit = asyncio.create_task(run_together(poll=p.run(), beat=beat()))
    await p.asking.wait()
    assert p.answer is not None
    p.answer.set_result(1)
    unit.cancel()  # the child's wait_for sees the answer and the cancel in one turn
    await cancel_and_wait(unit, grace_s=0.1, give_up_s=5)
    assert unit.cancelled()
    settled = beats
    await asyncio.sleep(0.05)
    assert beats == settled  # no child outlived its unit


async def test_one_failing_loop_stops_its_siblings_and_its_error_is_raised() -> None:
    stopped = asyncio.Event()

    async def sibling() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            stopped.set()

    async def broken() -> None:
        await asyncio.sleep(0)
        raise OSError("serial port gone")

    with pytest.raises(OSError, match="serial port gone"):
        await run_together(sibling=sibling(), broken=broken())
    assert stopped.is_set()
