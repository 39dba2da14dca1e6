"""The parking lift unit against the tower simulator's PLC over Modbus RTU on a serial link (time 20× faster):
store and retrieve, interlocks stop motion until reset, PLC silence, over-size vehicles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import Outbox
from edge.tasks import cancel_and_wait
from edge.units.base import UnitContext
from edge.units.parking_config import ParkingLiftConfig
from edge.units.parking_lift import ParkingError, ParkingLiftUnit
from protocol import parking as p
from simulators.parking_tower import Tower
from tests.sent import Sent
from tests.waits import until

SPEED = 20.0


@dataclass
class Rig:
    unit: ParkingLiftUnit
    tower: Tower
    outbox: Outbox
    commands: dict[str, Any]

    sent: Sent = field(init=False)

    def __post_init__(self) -> None:
        self.sent = Sent(self.outbox)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    tower = Tower(lifts=2, floors=8, bays=4, speed=SPEED)
    cfg = ParkingLiftConfig.model_validate(
        {
            "type": "parking_lift",
            "tower": "west",
            "plc": {"type": "rtu", "port": tower.port},
            "lifts": 2,
            "floors": 8,
            "bays": 4,
            "poll_s": 0.05,
            "watchdog_s": 1.0,
            "state": str(tmp_path / "parking.db"),
            "clock_scale": SPEED,
        }
    )
    outbox = await Outbox(tmp_path / "outbox.db", "tower-west").open()
    commands: dict[str, Any] = {}
    unit = ParkingLiftUnit(cfg)
    task = asyncio.create_task(unit.run(UnitContext("tower-west", outbox, commands.__setitem__)))
    await asyncio.wait_for(unit.ready.wait(), 5)
    yield Rig(unit, tower, outbox, commands)
    await cancel_and_wait(task)
    assert task.cancelled()  # the unit stops when told, without an error of its own
    await outbox.close()
    tower.close()


async def park(rig: Rig, subject: str, lift: int = 0, stay_s: float | None = None) -> None:
    rig.tower.vehicle_arrives(lift)
    await until(lambda: rig.unit.lifts[lift].vehicle is not None, 3, "the vehicle in the entrance bay")
    job = await rig.unit.store(subject, lift, stay_s=stay_s)
    assert job.done is not None
    res = await asyncio.wait_for(job.done, 15)
    assert res.ok, res


async def test_store_and_retrieve_end_to_end(rig: Rig) -> None:
    await park(rig, "res-1042", 0, stay_s=3600)
    lift, floor, bay = rig.unit.cars["res-1042"]
    assert rig.tower.bay_cars[(lift, floor, bay)]  # the PLC really put a car there
    job = await rig.unit.retrieve("res-1042", "face")
    res = await asyncio.wait_for(job.done, 15)  # type: ignore[arg-type]
    assert res.ok and res.kind == "retrieve" and 20 < res.duration_s < 120
    assert "res-1042" not in rig.unit.cars and not rig.tower.bay_cars
    requests = await rig.sent("lift.request")
    assert [r["body"]["kind"] for r in requests] == ["store", "retrieve"] and requests[1]["body"]["eta_s"] > 0
    with pytest.raises(ParkingError, match="no car"):
        await rig.unit.retrieve("res-1042")
    with pytest.raises(ParkingError, match="not a driver id"):
        await rig.unit.retrieve("京A12345")
    batches = await rig.sent("telemetry")
    metrics = {r["metric"] for b in batches for r in b["body"]["readings"]}
    assert {"west.occupancy", "west.parked", "west.0.queue", "west.1.queue"} <= metrics


@pytest.mark.parametrize(
    ("interlock", "fault", "severity"),
    [
        ("door_closed", "door_open", "major"),
        ("no_person", "person_detected", "critical"),
        ("estop_released", "estop", "critical"),
        ("motor_ok", "motor_fault", "major"),
    ],
)
async def test_an_open_interlock_stops_motion_until_reset(rig: Rig, interlock: str, fault: str, severity: str) -> None:
    await park(rig, "res-1203", 0, stay_s=14_400)  # a long stay: a high floor, a long ride down
    job = await rig.unit.retrieve("res-1203")
    await until(lambda: rig.unit.lifts[0].state == p.STATE_MOVING, 5, "the lift to move")
    rig.tower.set_interlock(0, interlock, False)
    await until(lambda: rig.unit.lifts[0].state in (p.STATE_FAULT, p.STATE_ESTOP), 3, "the stop")
    stopped_at = rig.tower.lifts[0].floor
    await asyncio.sleep(0.3)  # 6 s of tower time: nothing moves
    assert rig.tower.lifts[0].floor == stopped_at
    alarms = [a["body"] for a in await rig.sent("alarm.raise")]
    assert alarms[-1]["details"]["fault"] == fault and alarms[-1]["severity"] == severity
    from edge.commands import CommandError

    with pytest.raises(CommandError, match=interlock):
        await rig.commands["lift-reset"]({"lift": 0, "by": "operator"})  # still open: refused
    rig.tower.set_interlock(0, interlock, True)
    await asyncio.sleep(0.3)
    assert rig.tower.lifts[0].floor == stopped_at, "closing the interlock alone must not resume motion"
    await rig.commands["lift-reset"]({"lift": 0, "by": "operator"})
    res = await asyncio.wait_for(job.done, 20)  # type: ignore[arg-type]
    assert res.ok
    clears = [a["body"]["key"] for a in await rig.sent("alarm.clear")]
    assert "lift.west.0.fault" in clears


async def test_plc_silence_is_a_safe_stop(rig: Rig) -> None:
    await park(rig, "ticket-7731", 1, stay_s=14_400)
    job = await rig.unit.retrieve("ticket-7731")
    await until(lambda: rig.unit.lifts[1].state == p.STATE_MOVING, 5, "the lift to move")
    assert rig.tower.link is not None
    rig.tower.gateway_watchdog_s = 0.5  # wall seconds: well inside the job at 20× tower time
    rig.tower.link.cut = True  # the RS-485 line is cut
    await until(lambda: not rig.unit.comm_ok, 4, "the unit to notice")
    await until(lambda: rig.tower.lifts[1].stopped, 6, "the PLC to stop by itself")
    assert "lift.comm_lost" in [a["body"]["code"] for a in await rig.sent("alarm.raise")]
    rig.tower.link.cut = False
    await until(lambda: rig.unit.comm_ok, 5, "the link back")
    await until(lambda: rig.unit.lifts[1].state == p.STATE_FAULT, 3, "the PLC's own stop reported")
    assert rig.unit.lifts[1].fault == p.FAULTS.index("gateway_lost")
    await rig.commands["lift-reset"]({"lift": 1})
    assert (await asyncio.wait_for(job.done, 20)).ok  # type: ignore[arg-type]


@pytest.mark.parametrize(("length", "height", "why"), [(560, 150, "too long"), (450, 230, "too high")])
async def test_oversize_vehicle_refused_with_a_reason(rig: Rig, length: int, height: int, why: str) -> None:
    rig.tower.vehicle_arrives(0, length, height)
    await until(lambda: rig.unit.lifts[0].vehicle is not None, 3, "the vehicle")
    from edge.commands import CommandError

    with pytest.raises(CommandError, match=why):
        await rig.commands["lift-store"]({"subject": "res-0999", "lift": 0})
    refused = await rig.sent("event")
    assert refused[-1]["body"]["code"] == "lift.refused" and why in refused[-1]["body"]["message"]
    assert not rig.tower.bay_cars


def test_smart_scheduling_beats_first_come_first_served_on_a_fixed_seed() -> None:
    """A quarter hour of a busy morning (tower time 60× faster), both policies on the same traffic."""
    from bench.lift import run

    r = run(seed=3, hours=0.25, speed=60)
    assert r["smart"]["retrievals"] == r["fifo"]["retrievals"] >= 5
    assert r["smart"]["unfinished"] == r["fifo"]["unfinished"] == 0
    assert r["retrieval_s_p99"] < r["fifo_retrieval_s_p99"], r


def _crc16(frame: bytes) -> bytes:
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


async def test_a_short_answer_from_the_plc_is_a_transport_fault_not_a_crash(rig: Rig) -> None:
    """A confused PLC (or a late answer matched to the wrong request) returns fewer registers than asked for,
    in a well-formed frame: the unit counts it as a failed poll and goes on."""
    assert rig.tower.link is not None
    shortened = 0

    def shorten(direction: int, data: bytes) -> bytes:
        nonlocal shortened
        # the PLC's answer to "read 13 input registers": address, 0x04, 26 bytes, CRC
        if direction == 0 and shortened < 5 and len(data) == 31 and data[1] == 4 and data[2] == 26:
            shortened += 1
            body = data[:2] + bytes([10]) + data[3:13]
            return body + _crc16(body)
        return data

    rig.tower.link.rewrite = shorten
    await until(lambda: shortened == 5, 5, "five short answers")
    rig.tower.link.rewrite = None
    await park(rig, "ticket-4410", 0)  # the unit is still polling, commanding and reporting
    assert rig.unit.comm_ok and "ticket-4410" in rig.unit.cars
