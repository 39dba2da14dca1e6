"""An estate's community sensors for the district and the demo, each a gateway with its real unit: a gas
detector in the boiler room with a shut-off valve, a fence with two zones (the back yard armed at night), a
camera watching a tower block's south face, and the water meters of four flats on one bus.

What happens (``run``): now and then gas builds up in the boiler room past both levels — the valve shuts on
the gateway — and clears, and the caretaker resets the valve; someone climbs the fence; something falls from
the tower block; one flat has a running toilet (a leak the meters catch after a few meter-hours).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from simulators.gas_detector import GasDetectorSim
from simulators.ioboard import IOBoardSim
from simulators.water_meters import WaterMeterBus

log = logging.getLogger("civicedge.sim.sensors")
WATER_SCALE = 120.0  # a meter-hour every 30 s


class EstateSensors:
    def __init__(self, workdir: Path, every_s: float = 90.0) -> None:
        self.workdir, self.every_s = workdir, every_s
        self.detector = GasDetectorSim()
        self.valve = IOBoardSim()
        self.fence = IOBoardSim()
        self.bus = WaterMeterBus(4, clock_scale=WATER_SCALE, start_hour=6.0)
        self.bus.meters[3].leak_lph = 18.0  # flat 0303: a running toilet

    def units(self) -> dict[str, list[dict[str, Any]]]:
        rtu = {"type": "rtu", "port": self.bus.port, "baud": 9600}
        return {
            "gas-01": [
                {
                    "type": "gas",
                    "detector": "boiler-room",
                    "source": {"type": "modbus", "plc": {"type": "rtu", "port": self.detector.port, "baud": 9600}},
                    "io": {
                        "type": "ioboard",
                        "port": self.valve.port,
                        "outputs": {"valve": 0, "fan": 1},
                        "watchdog_s": None,
                    },
                    "on_high": ["valve", "fan"],
                    "poll_s": 1.0,
                    "report_s": 30,
                }
            ],
            "fence-01": [
                {
                    "type": "perimeter",
                    "io": {
                        "type": "ioboard",
                        "port": self.fence.port,
                        "inputs": {"north_beam": 0, "north_eol": 1, "yard_fence": 2},
                        "watchdog_s": None,
                    },
                    "zones": {
                        "north": {"input": "north_beam", "tamper": "north_eol"},
                        "yard": {
                            "input": "yard_fence",
                            "kind": "fence_contact",
                            "armed": "schedule",
                            "schedule": ["22:00-06:00"],
                        },
                    },
                    "camera": {"type": "simulated", "fps": 2},
                }
            ],
            "facade-01": [
                {
                    "type": "throwing",
                    "facade": "block-3-south",
                    "camera": {"type": "facade_sim", "seed": 21},
                    "keep_dir": str(self.workdir / "throwing-evidence"),
                }
            ],
            "meters-01": [
                {
                    "type": "water",
                    "meters": {
                        f"flat-0{i}03": {
                            "household": f"3-0{i}03",
                            "source": {"type": "modbus", "plc": rtu, "unit_id": i},
                        }
                        for i in range(1, 5)
                    },
                    "poll_s": 300,
                    "report_s": 3600,
                    "clock_scale": WATER_SCALE,
                }
            ],
        }

    async def run(self, agents: dict[str, Any], stop: asyncio.Event) -> None:
        step = 0
        while not await _wait(stop, self.every_s / 3):
            step += 1
            try:
                if step % 3 == 1:
                    await self._gas(agents["gas-01"], stop)
                elif step % 3 == 2:
                    await self._intruder(stop)
                else:
                    await self._drop(agents["facade-01"])
            except Exception:
                log.exception("estate sensor scene failed")

    async def _gas(self, agent: Any, stop: asyncio.Event) -> None:
        for lel in (4.0, 12.0, 27.0, 30.0, 14.0, 3.0, 0.5):  # a leak builds up, the valve shuts, it clears
            self.detector.lel = lel
            if await _wait(stop, 4):
                return
        if agent.units:
            with contextlib.suppress(Exception):
                await agent.units[0]._cmd_reset({})  # the caretaker checks the room and reopens the valve

    async def _intruder(self, stop: asyncio.Event) -> None:
        self.fence.set_input(0, True)  # someone crosses the north beam
        await _wait(stop, 2)
        self.fence.set_input(0, False)

    async def _drop(self, agent: Any) -> None:
        if agent.units and hasattr(agent.units[0].camera, "drop"):
            agent.units[0].camera.drop(floor=12 + len(agent.units[0].detections) % 6)

    def close(self) -> None:
        for part in (self.detector, self.valve, self.fence, self.bus):
            with contextlib.suppress(Exception):
                part.close()


async def _wait(stop: asyncio.Event, s: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), s)
    return stop.is_set()
