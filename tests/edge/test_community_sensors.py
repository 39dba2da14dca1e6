"""The community sensor units on their simulated hardware, with no cloud at all (everything decided here and
put in the outbox): gas levels and the local valve, perimeter zones, water meter analytics over a simulated
day, the throwing detector on rendered facade video."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import Outbox
from edge.tasks import cancel_and_wait
from edge.units.base import Unit, UnitContext
from edge.units.community_config import GasConfig, PerimeterConfig, WaterConfig
from edge.units.gas import GasUnit
from edge.units.perimeter import PerimeterUnit, in_window
from edge.units.water import WaterUnit
from edge.vision.falling import Calibration, FallDetector
from simulators.facade import FacadeRenderer, scenario
from simulators.gas_detector import GasDetectorSim
from simulators.ioboard import IOBoardSim
from simulators.water_meters import WaterMeterBus
from tests.sent import Sent
from tests.waits import until

Runner = Callable[[Unit], Any]


class Harness:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.commands: dict[str, Any] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self._sent = Sent(outbox)

    def start(self, unit: Unit) -> None:
        ctx = UnitContext("dev-1", self.outbox, self.commands.__setitem__, online=lambda: False)
        self.tasks.append(asyncio.create_task(unit.run(ctx)))

    async def sent(self, type_: str) -> list[dict[str, Any]]:
        return await self._sent(type_)

    async def raised(self) -> list[str]:
        return [m["body"]["key"] for m in await self.sent("alarm.raise")]

    async def cleared(self) -> list[str]:
        return [m["body"]["key"] for m in await self.sent("alarm.clear")]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    outbox = await Outbox(tmp_path / "outbox.db", "dev-1").open()
    h = Harness(outbox)
    yield h
    await cancel_and_wait(*h.tasks)
    await outbox.close()


# --- gas ---------------------------------------------------------------------------------------------------


async def test_gas_levels_close_the_valve_locally_and_latch(harness: Harness) -> None:
    detector, board = GasDetectorSim(), IOBoardSim()
    try:
        cfg = GasConfig.model_validate(
            {
                "type": "gas",
                "detector": "plant-b2",
                "source": {"type": "modbus", "plc": {"type": "rtu", "port": detector.port}},
                "io": {"type": "ioboard", "port": board.port, "outputs": {"valve": 0, "fan": 1}, "watchdog_s": None},
                "on_high": ["valve", "fan"],
                "poll_s": 0.1,
                "comm_timeout_s": 1.0,
            }
        )
        unit = GasUnit(cfg)
        harness.start(unit)
        await until(lambda: unit.lel == 0.0, 5, "the first reading")
        detector.lel = 12.5
        await until(lambda: unit.level == "low", 3, "the low level")
        assert not board.output(0)  # low: alarm only
        detector.lel = 31.0
        await until(lambda: board.output(0) and board.output(1), 3, "the valve closed and the fan on, locally")

        async def two_alarms() -> list[str]:
            keys = await harness.raised()
            return keys if len(keys) >= 2 else []

        assert (await until(two_alarms, 5, "two alarms"))[:2] == ["gas.plant-b2.low", "gas.plant-b2.high"]
        high = next(m for m in await harness.sent("alarm.raise") if m["body"]["code"] == "high")["body"]
        assert high["severity"] == "critical" and high["details"]["lel"] == 31.0
        with pytest.raises(Exception, match="ventilate"):
            await harness.commands["gas-reset"]({})  # not while there is gas
        detector.lel = 1.0
        await until(lambda: unit.level == "normal", 3, "the gas gone")
        assert board.output(0), "latched: the valve stays shut until someone resets it"
        assert await harness.commands["gas-reset"]({}) == {"reset": True, "outputs": ["valve", "fan"]}
        await until(lambda: not board.output(0), 3, "the valve open again")
        # a sensor fault, end of life, and a detector that stops answering
        detector.end_of_life = True
        detector.fault = True
        await until(lambda: unit.fault and unit.end_of_life, 3, "the status bits")
        detector.fault = False
        detector.alive = False
        await until(lambda: "gas.plant-b2.end_of_life" in unit.alarms.active, 3, "end of life")  # type: ignore[union-attr]
        raised = await harness.raised()
        assert {"gas.plant-b2.fault", "gas.plant-b2.end_of_life"} <= set(raised)
        cleared = await harness.cleared()
        assert {"gas.plant-b2.low", "gas.plant-b2.high"} <= set(cleared)
        readings = [m for m in await harness.sent("telemetry")]
        assert any(r["metric"] == "gas.plant-b2.lel" for m in readings for r in m["body"]["readings"])
    finally:
        detector.close()
        board.close()


def test_gas_config_refuses_outputs_it_does_not_have() -> None:
    with pytest.raises(ValueError, match="on_high names outputs"):
        GasConfig.model_validate(
            {
                "type": "gas",
                "detector": "x",
                "source": {"type": "contacts"},
                "io": {"type": "ioboard", "port": "/dev/null", "inputs": {"gas_low": 0, "gas_high": 1, "gas_fault": 2}},
                "on_high": ["valve"],
            }
        )


# --- perimeter -----------------------------------------------------------------------------------------------


def test_arm_windows_run_past_midnight() -> None:
    assert in_window("22:00-06:30", dt.time(23, 15)) and in_window("22:00-06:30", dt.time(3, 0))
    assert not in_window("22:00-06:30", dt.time(12, 0)) and in_window("09:00-17:00", dt.time(9, 0))


async def test_perimeter_zone_alarm_disarmed_zone_silent_and_tamper(harness: Harness) -> None:
    board = IOBoardSim()
    try:
        cfg = PerimeterConfig.model_validate(
            {
                "type": "perimeter",
                "io": {
                    "type": "ioboard",
                    "port": board.port,
                    "inputs": {"north_beam": 0, "north_eol": 1, "yard_fence": 2},
                    "watchdog_s": None,
                },
                "zones": {
                    "north": {"input": "north_beam", "tamper": "north_eol", "debounce_s": 0.3},
                    "yard": {
                        "input": "yard_fence",
                        "kind": "fence_contact",
                        "armed": "schedule",
                        "schedule": ["22:00-06:00"],
                    },
                },
                "camera": {"type": "simulated", "fps": 5},
            }
        )
        unit = PerimeterUnit(cfg)
        unit.clock = lambda: dt.datetime(2026, 11, 23, 14, 0)  # afternoon: the yard is disarmed
        harness.start(unit)
        await until(lambda: unit.armed == {"north": True, "yard": False}, 5, "the arm states")
        # a bird through the beam: shorter than the debounce
        board.set_input(0, True)
        await asyncio.sleep(0.1)
        board.set_input(0, False)
        # the disarmed yard's fence is rattled
        board.set_input(2, True)
        await asyncio.sleep(0.6)
        assert await harness.raised() == []
        board.set_input(2, False)
        # someone crosses the north beam
        board.set_input(0, True)
        await until(lambda: unit.intrusions, 3, "the intrusion")
        (alarm,) = [m["body"] for m in await harness.sent("alarm.raise")]
        assert alarm["key"] == "perimeter.north.intrusion" and alarm["severity"] == "critical"
        assert alarm["details"]["zone"] == "north" and alarm["details"]["kind"] == "ir_beam"
        snaps = await harness.sent("media.snapshot")
        assert [s["body"]["ref"] for s in snaps] == [alarm["details"]["snapshot_ref"]]
        board.set_input(0, False)
        await until(lambda: not unit.alarms.is_active("north.intrusion"), 3, "the beam restored")  # type: ignore[union-attr]
        # the line is cut: tamper, armed or not
        board.set_input(1, True)
        await until(lambda: unit.alarms.is_active("north.tamper"), 3, "tamper")  # type: ignore[union-attr]
        # night falls: the yard arms by its schedule; a command disarms the north zone
        unit.clock = lambda: dt.datetime(2026, 11, 23, 23, 0)
        await until(lambda: unit.armed["yard"], 3, "the yard armed at night")
        assert (await harness.commands["perimeter-arm"]({"zone": "north", "armed": False}))["armed"] == {"north": False}
        board.set_input(2, True)
        await until(lambda: unit.alarms.is_active("yard.intrusion"), 3, "the armed yard")  # type: ignore[union-attr]
        events = [m["body"]["code"] for m in await harness.sent("event")]
        assert events.count("perimeter.armed") == 2 and "perimeter.disarmed" in events
    finally:
        board.close()


# --- water ---------------------------------------------------------------------------------------------------


async def test_a_day_of_water_readings_leak_and_burst(harness: Harness) -> None:
    scale = 1800.0  # a meter-hour every 2 s
    bus = WaterMeterBus(3, clock_scale=scale, start_hour=0.0)
    try:
        meters = {
            f"m{i}": {
                "household": f"12-0{i}03",
                "source": {"type": "modbus", "plc": {"type": "rtu", "port": bus.port, "baud": 9600}, "unit_id": i},
            }
            for i in (1, 2, 3)
        }
        cfg = WaterConfig.model_validate(
            {"type": "water", "meters": meters, "poll_s": 60, "clock_scale": scale, "burst_s": 120, "silent_s": 600}
        )
        bus.meters[2].leak_lph = 15.0  # a running toilet in 12-0203
        unit = WaterUnit(cfg)
        harness.start(unit)

        async def hourly(meter: str) -> list[dict[str, Any]]:
            return [
                r
                for m in await harness.sent("telemetry")
                for r in m["body"]["readings"]
                if r["metric"] == f"water.{meter}.hourly_l"
            ]

        async def six_hours_each() -> bool:  # a meter's hour is reported once the meter was read in that hour
            return min([len(await hourly(m)) for m in ("m1", "m2", "m3")]) >= 6

        await until(six_hours_each, 30, "six hourly readings from every meter")
        keys = set(await harness.raised())
        assert "water.m2.leak" in keys and "water.m1.leak" not in keys and "water.m3.leak" not in keys
        first_hours = (await hourly("m1"))[:5]
        assert first_hours[0]["tags"] == {"household": "12-0103"}
        assert sum(r["value"] for r in first_hours) < 5  # nobody uses water between midnight and five
        bus.meters[3].burst_lph = 4000.0
        await until(lambda: unit.alarms.is_active("m3.burst"), 10, "the burst")  # type: ignore[union-attr]
        bus.meters[3].burst_lph = 0.0
        bus.meters[1].reverse_lph = 60.0
        bus.meters[1].people = 0
        await until(lambda: unit.alarms.is_active("m1.reverse"), 10, "reverse flow")  # type: ignore[union-attr]
        bus.meters[2].alive = False
        await until(lambda: unit.alarms.is_active("m2.silent"), 10, "a meter gone quiet")  # type: ignore[union-attr]
        assert "water.m3.burst" in await harness.cleared()
    finally:
        bus.close()


# --- throwing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 4, 11])
def test_throwing_detector_finds_the_fall_and_its_floor(seed: int) -> None:
    sc = scenario(seed, duration_s=16, falls=1)
    found = _run_detector(sc)
    (fall,) = sc.falls
    assert len(found) == 1, found
    d = found[0]
    assert abs(d.start - fall.start_s) < 1.0 and d.floor_low <= fall.floor <= d.floor_high
    assert 0.7 < d.accel_g < 1.3


@pytest.mark.parametrize("seed", [0, 3, 6, 9])
def test_throwing_detector_ignores_birds_rain_branches_and_lights(seed: int) -> None:
    sc = scenario(seed, duration_s=20, falls=0)
    assert sc.birds and (sc.rain or sc.branch or sc.light_switches)
    assert _run_detector(sc) == []


def _run_detector(sc: Any) -> list[Any]:
    import cv2

    spec = sc.spec
    r = FacadeRenderer(sc)
    det = FallDetector(Calibration(spec.height, spec.floors, spec.roof_y, spec.ground_y, spec.floor_m))
    found = []
    for i in range(r.frames):
        found += det.process(cv2.cvtColor(r.frame(i), cv2.COLOR_RGB2GRAY), i / spec.fps)
    return found
