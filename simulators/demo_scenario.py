"""What happens in ``make demo`` besides the district's covers: a real gate unit (simulated camera, thermal
array and I/O board) where a resident comes home now and then and a visitor rings flat 1203 — the demo
resident answers on the phone view — a parking tower (the real lift unit over the Modbus simulator) where
cars arrive and are called back, and an elevator (the car board's MicroPython firmware on the unix port, the
real monitoring unit) riding between floors, with now and then a passenger trapped between floors for a
while."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from pathlib import Path
from typing import Any

from simulators.elevator import ElevatorWorld
from simulators.firmware import FirmwareBoard
from simulators.ioboard import IOBoardSim
from simulators.parking_tower import Tower
from simulators.thermal import Scene

log = logging.getLogger("civicedge.demo")
TOWER_SPEED = 10.0


class DemoSite:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.board = IOBoardSim()
        self.tower = Tower(lifts=2, floors=6, bays=4, speed=TOWER_SPEED)
        self.car_board = FirmwareBoard("carboard", {"period_ms": 100})
        self.elevator = ElevatorWorld(self.car_board, floors=12, speed_ms=2.5)
        self._stop = threading.Event()

    def units(self) -> dict[str, list[dict[str, Any]]]:
        """Unit configs by gateway."""
        return {
            "gate-01": [
                {
                    "type": "gate",
                    "door": "east-entrance",
                    "io": {
                        "type": "ioboard",
                        "port": self.board.port,
                        "outputs": {"lock": 0},
                        "inputs": {"door_contact": 0, "fire": 1},
                        "watchdog_s": None,
                    },
                    "secret": "demo-gallery-secret",
                    "gallery": str(self.workdir / "gallery.db"),
                    "camera": {"type": "simulated", "fps": 10},
                    "open_s": 3,
                    "visitor_answer_s": 45,
                    "sync_check_s": 30,
                }
            ],
            "tower-01": [
                {
                    "type": "parking_lift",
                    "tower": "north",
                    "plc": {"type": "rtu", "port": self.tower.port},
                    "lifts": 2,
                    "floors": 6,
                    "bays": 4,
                    "poll_s": 0.1,
                    "watchdog_s": 1.0,
                    "state": str(self.workdir / "parking.db"),
                    "clock_scale": TOWER_SPEED,
                }
            ],
            "lift-12": [
                {
                    "type": "elevator",
                    "car": "block-12-a",
                    "port": self.car_board.port,
                    "floors": 12,
                    "rated_speed_ms": 2.5,
                    "trapped_s": 20,
                }
            ],
        }

    async def run(self, agents: dict[str, Any], stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._gate(agents["gate-01"], stop))
            tg.create_task(self._parking(agents["tower-01"], stop))
            tg.create_task(asyncio.to_thread(self._rides))
            await stop.wait()
            self._stop.set()

    async def _wait(self, stop: asyncio.Event, s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), s)
        return stop.is_set()

    async def _gate(self, agent: Any, stop: asyncio.Event) -> None:
        while not agent.units or getattr(agent.units[0], "vision", None) is None:
            if await self._wait(stop, 0.5):
                return
        gate = agent.units[0]
        n = 0
        while not await self._wait(stop, 20):
            n += 1
            try:
                if n % 3:
                    gate.sim.arrive("astronaut", Scene(distance_m=0.7), dwell_s=3)  # a resident comes home
                else:
                    gate.sim.arrive("grace_hopper", Scene(distance_m=0.7), dwell_s=6)  # a visitor
                    await asyncio.sleep(3)
                    asyncio.create_task(gate.keypad("1203#"))  # noqa: RUF006 - answered (or not) on the phone
            except Exception:
                log.exception("demo gate scene failed")

    async def _parking(self, agent: Any, stop: asyncio.Event) -> None:
        while not agent.units or not agent.units[0].ready.is_set():
            if await self._wait(stop, 0.5):
                return
        unit = agent.units[0]
        rng = random.Random(3)
        parked: list[str] = []
        n = 0
        while not await self._wait(stop, 8):
            n += 1
            try:
                if parked and (len(parked) > 10 or rng.random() < 0.4):
                    await unit.retrieve(parked.pop(rng.randrange(len(parked))))
                else:
                    lift = unit.choose_entrance()
                    if self.tower.lifts[lift].vehicle is not None or any(
                        j.kind == "store" for j in unit.lifts[lift].queue
                    ):
                        continue  # the entrance is still busy
                    car = f"car{n:03d}"
                    self.tower.vehicle_arrives(lift)
                    for _ in range(100):  # the unit sees the car through the PLC's registers
                        if unit.lifts[lift].vehicle is not None:
                            break
                        await asyncio.sleep(0.05)
                    try:
                        await unit.store(car, lift, "plate")
                        parked.append(car)
                    except Exception:
                        self.tower.vehicle_leaves_entrance(lift)
                        raise
            except Exception as exc:  # a full tower, an interlock: the demo just goes on
                log.info("demo parking step skipped", extra={"reason": str(exc)})

    def _rides(self) -> None:
        """The building's day: rides between floors; every eighth ride the car stops between floors with a
        passenger inside for a minute, then is released."""
        rng = random.Random(5)
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                if n % 8 == 0:
                    w = self.elevator
                    w.car.person = True
                    w.doors(False)
                    w.move_to(w.car.height_m + 4.5 if w.car.height_m < 20 else w.car.height_m - 4.5)
                    for _ in range(60):
                        if self._stop.is_set():
                            return
                        w.hold(1.0)
                    w.move_to(round(w.car.height_m / w.h) * w.h)
                    w.doors(True)
                    w.car.person = False
                    w.hold(0.5)
                else:
                    self.elevator.trip(rng.randrange(0, 12), dwell_s=2.0)
                    self.elevator.hold(rng.uniform(2, 6))
            except Exception:
                log.exception("demo elevator ride failed")
                return

    def close(self) -> None:
        self._stop.set()
        self.board.close()
        self.tower.close()
        self.car_board.close()
