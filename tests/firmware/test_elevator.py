"""The elevator monitor over a car board running under MicroPython on a serial link: a normal day raises
nothing; each fault is detected with its evidence, and clears when it ends."""

from __future__ import annotations
from tests.sent import Sent
from tests.waits import until

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.outbox import Outbox
from edge.units.base import UnitContext
from edge.units.elevator import ElevatorUnit
from edge.units.elevator_config import ElevatorConfig
from simulators.elevator import ElevatorWorld
from simulators.firmware import FirmwareBoard
from edge.tasks import cancel_and_wait



@pytest.fixture
async def rig(micropython: Any, tmp_path: Path) -> AsyncIterator[tuple[ElevatorUnit, ElevatorWorld, FirmwareBoard, Outbox]]:
    board = FirmwareBoard("carboard", {"period_ms": 50})
    world = ElevatorWorld(board, floors=6, speed_ms=3.0)
    cfg = ElevatorConfig(
        type="elevator", car="block-12-a", port=board.port, floors=6, rated_speed_ms=3.0, trapped_s=1.0,
        stop_outside_zone_s=1.0, reopen_limit=3, comm_timeout_s=1.0,
    )
    outbox = await Outbox(tmp_path / "outbox.db", "elevator-01").open()
    unit = ElevatorUnit(cfg)
    task = asyncio.create_task(unit.run(UnitContext("elevator-01", outbox, lambda *_: None)))
    await until(lambda: unit.last is not None, 5, "the car board's stream")
    yield unit, world, board, outbox
    await cancel_and_wait(task)
    assert task.cancelled()  # the unit stops when told, without an error of its own
    await outbox.close()
    board.close()


async def test_a_normal_day_raises_nothing(rig: Any) -> None:
    unit, world, _board, outbox = rig
    for floor in (2, 0, 3, 1, 0):
        await asyncio.to_thread(world.trip, floor)
    await until(lambda: unit.trips >= 5, 3, "the trips counted")
    assert unit.raised == [], unit.raised
    assert unit.door_cycles >= 5 and unit.running_s > 2
    status = [m["body"] for m in await Sent(outbox)()]
    assert any(s.get("direction") == "up" for s in status) and any(s.get("direction") == "down" for s in status)


async def test_trapped_passenger_is_critical_with_evidence(rig: Any) -> None:
    unit, world, _board, outbox = rig
    world.car.person = True
    await asyncio.to_thread(world.doors, False)
    await asyncio.to_thread(world.move_to, 4.5)  # stops between floors 1 and 2
    await asyncio.to_thread(world.hold, 1.5)
    await until(lambda: "trapped" in unit.active, 3, "the entrapment")
    evidence = unit.active["trapped"]
    assert "person inside" in evidence and "outside door zone" in evidence and "4.50 m" in evidence
    faults = [m["body"] for m in await Sent(outbox)()]
    trapped = [f for f in faults if f.get("code") == "trapped"]
    assert trapped[0]["severity"] == "critical" and trapped[0]["entrapment"] and trapped[0]["active"]
    await asyncio.to_thread(world.move_to, 6.0)  # released: the car levels at floor 2
    await asyncio.to_thread(world.doors, True)
    await until(lambda: "trapped" not in unit.active, 3, "the release")


@pytest.mark.parametrize(
    ("scene", "code"),
    [
        ("door_open_moving", "moving_door_open"),
        ("overspeed", "overspeed"),
        ("overtravel", "overtravel"),
        ("alarm", "alarm_button"),
        ("power", "power_loss"),
        ("reopen", "door_reopening"),
        ("stuck_empty", "stop_outside_zone"),
        ("silent", "comm_lost"),
    ],
)
async def test_each_fault_is_detected(rig: Any, scene: str, code: str) -> None:
    unit, world, board, _outbox = rig
    w = world
    if scene == "door_open_moving":
        await asyncio.to_thread(w.move_to, 6.0, None, True)
    elif scene == "overspeed":
        await asyncio.to_thread(w.trip, 2, True, 0.3, 3.8)
    elif scene == "overtravel":
        await asyncio.to_thread(w.move_to, 5 * 3.0 + 0.6)
    elif scene == "alarm":
        w.car.alarm = True
        await asyncio.to_thread(w.hold, 0.3)
    elif scene == "power":
        w.car.power = False
        await asyncio.to_thread(w.hold, 0.3)
    elif scene == "reopen":
        await asyncio.to_thread(w.trip, 2, True, 0.1)
        for _ in range(3):
            await asyncio.to_thread(w.doors, False)
            await asyncio.to_thread(w.doors, True)
    elif scene == "stuck_empty":
        await asyncio.to_thread(w.doors, False)
        await asyncio.to_thread(w.move_to, 7.5)
        await asyncio.to_thread(w.hold, 1.4)
    elif scene == "silent":
        assert board.link is not None
        board.link.cut = True
        await asyncio.sleep(1.6)
    await until(lambda: unit.raised, 3, code)
    assert [c for c, _e in unit.raised] == [code], unit.raised  # that fault, and no other
    assert unit.raised[0][1]  # with its evidence
