"""The district's buildings: community gates, parking-lift towers and elevators, each a gateway running the real
unit on simulated hardware — a gate unit with a simulated camera, thermal array and I/O board; a lift unit over
the parking tower's Modbus simulator; an elevator unit reading the car board's MicroPython firmware on the unix
port — plus the people who use them.

Traffic on a schedule (``run``): residents come home and visitors ring a flat at every gate, cars arrive at and
are called back from every tower, elevators ride between floors with now and then a passenger trapped. The
same things on demand, for tests and the demo: ``resident_arrives``, ``visitor_rings``, ``car_arrives``,
``entrapment``. Used by ``make demo`` (one of each) and ``civicedge sim district`` (50 gates, 10 towers,
20 elevators by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.tasks import cancel_and_wait
from simulators.elevator import ElevatorWorld
from simulators.firmware import FirmwareBoard
from simulators.ioboard import IOBoardSim
from simulators.parking_tower import Tower
from simulators.thermal import Scene

log = logging.getLogger("civicedge.sim.community")
TOWER_SPEED = 10.0  # the towers' machinery runs 10× (a store takes seconds, not a minute)
RESIDENT_PHOTO, VISITOR_PHOTO = "astronaut", "grace_hopper"
RESIDENT_FLAT, HOST_FLAT = "0304", "1203"
SENSOR_IDS = (
    ("gas-01", "gas"),
    ("fence-01", "perimeter"),
    ("facade-01", "throwing"),
    ("meters-01", "water"),
)  # the resident the gates know; the flat visitors ring


@dataclass(frozen=True)
class CommunitySpec:
    gates: int = 1
    towers: int = 1
    elevators: int = 1
    gate_fps: float = 10.0  # frames the gate terminals analyse per second (lower it for many gates on 2 cores)
    tower_poll_s: float = 0.1  # how often the lift units read their PLC
    car_board_period_ms: int = 100  # the elevator car boards' sampling period
    gate_every_s: float = 20.0  # someone at each gate this often (real seconds)
    tower_every_s: float = 8.0  # a car arriving or called back at each tower this often
    entrapment_every: int = 8  # every n-th elevator ride stops between floors with a passenger
    entrapment_s: float = 60.0
    interlock_every: int = 25  # every n-th step at a tower a lift interlock opens for a while
    sensors: bool = False  # the estate's gas detector, fence, facade camera and water meters (estate_sensors)
    seed: int = 5


def gateway_ids(spec: CommunitySpec) -> Iterator[tuple[str, str]]:
    """(device id, kind) of every gateway, in a stable order."""
    yield from ((f"gate-{i + 1:02d}", "gate") for i in range(spec.gates))
    yield from ((f"tower-{i + 1:02d}", "parking_lift") for i in range(spec.towers))
    yield from ((f"lift-{i + 1:02d}", "elevator") for i in range(spec.elevators))
    if spec.sensors:
        yield from SENSOR_IDS


class Community:
    """The simulated hardware of the buildings (all of them, or the gateways in ``only``) and the people using
    them, keyed by gateway id. ``close()`` releases it."""

    def __init__(self, spec: CommunitySpec, workdir: Path, only: set[str] | None = None) -> None:
        self.spec, self.workdir = spec, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.ids = [(g, k) for g, k in gateway_ids(spec) if only is None or g in only]
        self.boards: dict[str, IOBoardSim] = {}
        self.towers: dict[str, Tower] = {}
        self.car_boards: dict[str, FirmwareBoard] = {}
        self.elevators: dict[str, ElevatorWorld] = {}
        self._stop = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.rides = 0
        self.sensors: Any = None
        try:
            if any(k in ("gas", "perimeter", "throwing", "water") for _g, k in self.ids):
                from simulators.estate_sensors import EstateSensors

                self.sensors = EstateSensors(workdir)
            for gw, kind in self.ids:
                if kind == "gate":
                    self.boards[gw] = IOBoardSim()
                elif kind == "parking_lift":
                    self.towers[gw] = Tower(lifts=2, floors=6, bays=4, speed=TOWER_SPEED)
                elif kind == "elevator":
                    board = self.car_boards[gw] = FirmwareBoard("carboard", {"period_ms": spec.car_board_period_ms})
                    world = self.elevators[gw] = ElevatorWorld(board, floors=12, speed_ms=2.5)
                    world.dt = spec.car_board_period_ms / 2000  # the car's sensors change twice per sample
        except BaseException:
            self.close()
            raise

    # --- configuration --------------------------------------------------------------------------------------

    def units(self) -> dict[str, list[dict[str, Any]]]:
        """Unit configs by gateway id."""
        out: dict[str, list[dict[str, Any]]] = {}
        for gid, board in self.boards.items():
            out[gid] = [
                {
                    "type": "gate",
                    "door": f"{gid}-entrance",
                    "io": {
                        "type": "ioboard",
                        "port": board.port,
                        "outputs": {"lock": 0},
                        "inputs": {"door_contact": 0, "fire": 1},
                        "watchdog_s": None,
                    },
                    "secret": f"{gid}-gallery-secret",
                    "gallery": str(self.workdir / f"{gid}-gallery.db"),
                    "camera": {"type": "simulated", "fps": self.spec.gate_fps},
                    "open_s": 3,
                    "visitor_answer_s": 45,
                    "sync_check_s": 30,
                }
            ]
        for tid, tower in self.towers.items():
            out[tid] = [
                {
                    "type": "parking_lift",
                    "tower": tid,
                    "plc": {"type": "rtu", "port": tower.port},
                    "lifts": 2,
                    "floors": 6,
                    "bays": 4,
                    "poll_s": self.spec.tower_poll_s,
                    "watchdog_s": 1.0,
                    "state": str(self.workdir / f"{tid}-parking.db"),
                    "clock_scale": TOWER_SPEED,
                }
            ]
        for lid, car_board in self.car_boards.items():
            out[lid] = [
                {
                    "type": "elevator",
                    "car": f"{lid}-car",
                    "port": car_board.port,
                    "floors": 12,
                    "rated_speed_ms": 2.5,
                    "trapped_s": 20,
                }
            ]
        if self.sensors is not None:
            out.update({gw: u for gw, u in self.sensors.units().items() if any(gw == g for g, _k in self.ids)})
        return out

    @staticmethod
    def register_people(api: Any, site: str, spec: CommunitySpec) -> None:
        """The gateways, the gates' resident (with consent and a face from the shipped photo) and the host of
        flat 1203, through the real API (``api``: an httpx/TestClient-like client)."""
        for dev, kind in gateway_ids(spec):
            api.post("/api/devices", json={"id": dev, "site_id": site, "kind": kind, "name": dev})
        if not spec.gates:
            return
        created = set()
        for rid, flat, name in (
            (f"res-{RESIDENT_FLAT}", RESIDENT_FLAT, "Eileen Collins"),
            (f"res-{HOST_FLAT}", HOST_FLAT, "Chen Jie"),
        ):
            r = api.post(f"/api/sites/{site}/residents", json={"id": rid, "unit": flat, "name": name, "consent": True})
            if r.status_code == 201:
                created.add(rid)
        if f"res-{RESIDENT_FLAT}" in created:  # a rerun over the same database does not enrol her twice
            from simulators.camera import FACES, PHOTOS

            photo = (FACES / PHOTOS[RESIDENT_PHOTO][0]).read_bytes()
            r = api.post(f"/api/residents/res-{RESIDENT_FLAT}/faces", content=photo)
            if r.status_code >= 400:
                raise RuntimeError(f"enrolling the gates' resident was refused: {r.text[:300]}")

    # --- on demand --------------------------------------------------------------------------------------------

    @staticmethod
    def resident_arrives(gate: Any, dwell_s: float = 3.0) -> None:
        """The enrolled resident walks up to ``gate`` (a running gate unit)."""
        gate.camera.arrive(RESIDENT_PHOTO, Scene(distance_m=0.7), dwell_s=dwell_s)

    @staticmethod
    async def visitor_rings(gate: Any, flat: str = HOST_FLAT) -> dict[str, Any]:
        """A stranger stands at ``gate`` and rings ``flat`` on the keypad; the request goes to the resident."""
        gate.camera.arrive(VISITOR_PHOTO, Scene(distance_m=0.7), dwell_s=6)
        await asyncio.sleep(1.0)  # the visitor reaches the keypad (the snapshot shows them)
        result: dict[str, Any] = await gate.keypad(f"{flat}#")
        return result

    async def car_arrives(self, tower_id: str, unit: Any, car: str) -> bool:
        """A car drives into a free entrance of ``tower`` and the driver stores it; True once it is in its bay,
        False if the entrance is busy or the store failed."""
        tower = self.towers[tower_id]
        lift = unit.choose_entrance()
        if tower.lifts[lift].vehicle is not None or any(j.kind == "store" for j in unit.lifts[lift].queue):
            return False
        tower.vehicle_arrives(lift)
        for _ in range(100):  # the unit sees the car through the PLC's registers
            if unit.lifts[lift].vehicle is not None:
                break
            await asyncio.sleep(0.05)
        try:
            job = await unit.store(car, lift, "plate")
        except Exception:
            tower.vehicle_leaves_entrance(lift)
            raise
        result = await asyncio.wait_for(job.done, 120)  # the car is in its bay (or the store failed)
        return bool(result.ok)

    async def interlock(
        self, tower_id: str, unit: Any, lift: int = 1, name: str = "door_closed", seconds: float = 20.0
    ) -> None:
        """A lift's interlock opens (a landing door forced, someone in the bay) for ``seconds``; then it closes
        and the attendant resets the lift."""
        tower = self.towers[tower_id]
        tower.set_interlock(lift, name, False)
        await asyncio.sleep(seconds)
        tower.set_interlock(lift, name, True)
        await asyncio.sleep(1.0)
        with contextlib.suppress(Exception):  # a lift that did not fault needs no reset
            await unit._cmd_reset({"lift": lift, "by": "attendant"})

    def entrapment(self, lift_id: str, seconds: float | None = None) -> None:
        """Blocking: the car stops between floors with a passenger for ``seconds``, then is released."""
        w = self.elevators[lift_id]
        w.car.person = True
        w.doors(False)
        w.move_to(w.car.height_m + 4.5 if w.car.height_m < 20 else w.car.height_m - 4.5)
        end = seconds if seconds is not None else self.spec.entrapment_s
        waited = 0.0
        while waited < end and not self._stop.is_set():
            w.hold(0.5)
            waited += 0.5
        w.move_to(round(w.car.height_m / w.h) * w.h)
        w.doors(True)
        w.car.person = False
        w.hold(0.5)

    # --- on a schedule ----------------------------------------------------------------------------------------

    async def run(self, agents: dict[str, Any], stop: asyncio.Event) -> None:
        """Everyone's day until ``stop`` (``agents``: the running agents by gateway id)."""
        rng = random.Random(self.spec.seed)
        async with asyncio.TaskGroup() as tg:
            for dev, kind in self.ids:
                # spread the buildings' first events over a period so they do not all happen at once
                offset = rng.uniform(0, self.spec.gate_every_s)
                if kind == "gate":
                    tg.create_task(self._gate(agents[dev], stop, offset))
                elif kind == "parking_lift":
                    tg.create_task(self._parking(dev, agents[dev], stop, offset, rng.random()))
                elif kind == "elevator":
                    tg.create_task(asyncio.to_thread(self._rides, dev))
            if self.sensors is not None and all(g in agents for g, _k in SENSOR_IDS):
                tg.create_task(self.sensors.run(agents, stop))
            await stop.wait()
            self._stop.set()

    @staticmethod
    async def _unless_stopped(stop: asyncio.Event, step: Coroutine[Any, Any, bool]) -> bool:
        """``step``'s result, or False at once when the district stops (a car half-way into its bay)."""
        task = asyncio.ensure_future(step)
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not task.done():
            await cancel_and_wait(task, raise_errors=True)
            return False
        return task.result()

    async def _wait(self, stop: asyncio.Event, s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), s)
        return stop.is_set()

    async def _gate(self, agent: Any, stop: asyncio.Event, offset: float) -> None:
        while not agent.units or getattr(agent.units[0], "vision", None) is None:
            if await self._wait(stop, 0.5):
                return
        if await self._wait(stop, offset):
            return
        gate, n = agent.units[0], 0
        while not await self._wait(stop, self.spec.gate_every_s):
            n += 1
            try:
                if n % 3:
                    self.resident_arrives(gate)
                else:
                    asyncio.create_task(self.visitor_rings(gate))  # noqa: RUF006 - answered (or not) later
            except Exception:
                log.exception("gate scene failed")

    async def _parking(self, tower_id: str, agent: Any, stop: asyncio.Event, offset: float, seed: float) -> None:
        while not agent.units or not agent.units[0].ready.is_set():
            if await self._wait(stop, 0.5):
                return
        if await self._wait(stop, offset):
            return
        unit, rng = agent.units[0], random.Random(seed)
        parked: list[str] = []
        n = 0
        while not await self._wait(stop, self.spec.tower_every_s):
            n += 1
            try:
                if self.spec.interlock_every and n % self.spec.interlock_every == 0:
                    self._tasks.add(t := asyncio.create_task(self.interlock(tower_id, unit, lift=n % 2)))
                    t.add_done_callback(self._tasks.discard)
                elif parked and (len(parked) > 10 or rng.random() < 0.4):
                    await unit.retrieve(parked.pop(rng.randrange(len(parked))))
                else:
                    car = f"{tower_id}-car{n:03d}"
                    if await self._unless_stopped(stop, self.car_arrives(tower_id, unit, car)):
                        parked.append(car)
            except Exception as exc:  # a full tower, an interlock: the day goes on
                log.info("parking step skipped", extra={"reason": str(exc)})

    def _rides(self, lift_id: str) -> None:
        """The building's day: rides between floors; every n-th ride a passenger is trapped for a while."""
        rng = random.Random(f"{self.spec.seed}-{lift_id}")
        w, n = self.elevators[lift_id], 0
        while not self._stop.is_set():
            n += 1
            try:
                if self.spec.entrapment_every and n % self.spec.entrapment_every == 0:
                    self.entrapment(lift_id)
                else:
                    w.trip(rng.randrange(0, 12), dwell_s=2.0)
                    w.hold(rng.uniform(2, 6))
                self.rides += 1
            except Exception:
                log.exception("elevator ride failed")
                return

    def close(self) -> None:
        self._stop.set()
        if self.sensors is not None:
            self.sensors.close()
        parts: list[IOBoardSim | Tower | FirmwareBoard] = [*self.boards.values(), *self.towers.values()]
        for part in [*parts, *self.car_boards.values()]:
            with contextlib.suppress(Exception):
                part.close()
