"""Elevator monitor: the car board's sensor stream → trips, door cycles, running hours, and faults in the
spirit of GB/T 24476 (elevator IoT) — each an ``elevator.fault`` alarm with its evidence, raised once and
cleared when the condition ends.

| code | condition | severity |
|---|---|---|
| ``trapped`` | a person inside, stopped outside the door zone (or in it, doors never opened) ``trapped_s`` | critical |
| ``stop_outside_zone`` | the car stopped outside a door zone for ``stop_outside_zone_s`` (nobody inside) | major |
| ``moving_door_open`` | moving with the doors open | critical |
| ``overspeed`` | faster than ``overspeed_ratio`` × rated speed | major |
| ``overtravel`` | beyond the top or bottom landing by more than ``overtravel_m`` | critical |
| ``door_reopening`` | the doors re-opened ``reopen_limit`` times at one stop | minor |
| ``alarm_button`` | the alarm button pressed | major |
| ``power_loss`` | mains power gone (the board runs on its battery) | major |
| ``comm_lost`` | no word from the car board for ``comm_timeout_s`` | major |
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from edge.drivers.boardlink import BoardLink
from edge.tasks import run_together
from edge.units.base import Unit, UnitContext
from edge.units.elevator_config import ElevatorConfig
from protocol import serial_frame as sf
from protocol.messages import Body, ElevatorFault, ElevatorStatus, Severity

log = logging.getLogger("civicedge.edge.elevator")

SEVERITY: dict[str, Severity] = {
    "trapped": "critical",
    "stop_outside_zone": "major",
    "moving_door_open": "critical",
    "overspeed": "major",
    "overtravel": "critical",
    "door_reopening": "minor",
    "alarm_button": "major",
    "power_loss": "major",
    "comm_lost": "major",
}
MOVING_MS = 0.05


@dataclass
class Sample:
    t: float
    zone: bool
    door: bool
    height_m: float
    speed_ms: float
    load_kg: float
    person: bool
    alarm: bool
    power: bool


class ElevatorUnit(Unit):
    name = "elevator"

    def __init__(self, cfg: ElevatorConfig) -> None:
        self.cfg = cfg
        self.link = BoardLink(cfg.port, cfg.baud, on_event=self._on_event)
        self.samples: asyncio.Queue[Sample] = asyncio.Queue(maxsize=1000)
        self.active: dict[str, str] = {}  # fault code → evidence
        self.raised: list[tuple[str, str]] = []  # (code, evidence) in order, for status and tests
        self.trips = 0
        self.door_cycles = 0
        self.running_s = 0.0
        self.last: Sample | None = None
        self._stopped_since: float | None = None
        self._reopens = 0
        self._door_closed_at_this_stop = False  # the doors have cycled at the current stop
        self._ctx: UnitContext | None = None
        self._last_rx = time.monotonic()
        self.bad_samples = 0

    def _on_event(self, op: int, payload: bytes) -> None:
        if op != sf.OP_SENSOR_EVENT:
            return
        try:
            r = json.loads(payload)
            s = Sample(
                time.monotonic(),
                bool(r["z"]),
                bool(r["d"]),
                r["h"] / 100,
                r["v"] / 100,
                float(r["l"]),
                bool(r["p"]),
                bool(r["a"]),
                bool(r["w"]),
            )
        except (ValueError, KeyError, TypeError):
            self.bad_samples += 1
            return
        self._last_rx = s.t
        with contextlib.suppress(asyncio.QueueFull):
            self.samples.put_nowait(s)

    async def run(self, ctx: UnitContext) -> None:
        self._ctx = ctx
        ctx.register_command("elevator-status", self._cmd_status)
        await self.link.open()
        try:
            await run_together(
                elevator_samples=self._consume(),
                elevator_link=self._watch_link(),
                elevator_totals=self._totals(),
            )
        finally:
            await self.link.close()

    async def _put(self, body: Body) -> None:
        assert self._ctx is not None
        await self._ctx.outbox.put(body)

    def floor_of(self, height_m: float) -> int:
        return self.cfg.lowest_floor + round(height_m / self.cfg.floor_height_m)

    async def _fault(self, code: str, on: bool, evidence: str = "") -> None:
        if on and code not in self.active:
            self.active[code] = evidence
            self.raised.append((code, evidence))
            floor = self.floor_of(self.last.height_m) if self.last else None
            await self._put(
                ElevatorFault(
                    car=self.cfg.car,
                    code=code,
                    severity=SEVERITY[code],
                    active=True,
                    entrapment=code == "trapped",
                    floor=floor,
                    description=evidence[:1000],
                )
            )
            log.warning("elevator fault", extra={"car": self.cfg.car, "code": code, "evidence": evidence})
        elif not on and code in self.active:
            self.active.pop(code)
            await self._put(ElevatorFault(car=self.cfg.car, code=code, severity=SEVERITY[code], active=False))

    async def _watch_link(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self.cfg.comm_timeout_s / 3))
            silent = time.monotonic() - self._last_rx
            await self._fault("comm_lost", silent > self.cfg.comm_timeout_s, f"no car board data for {silent:.1f} s")

    async def _totals(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.status_every_s)
            assert self._ctx is not None
            ob = self._ctx.outbox
            await ob.put_reading(f"{self.cfg.car}.trips", float(self.trips))
            await ob.put_reading(f"{self.cfg.car}.door_cycles", float(self.door_cycles))
            await ob.put_reading(f"{self.cfg.car}.running_h", self.running_s / 3600, unit="h")

    def _evidence(self, s: Sample, why: str) -> str:
        return (
            f"{why}: floor {self.floor_of(s.height_m)} at {s.height_m:.2f} m, speed {s.speed_ms:+.2f} m/s, "
            f"doors {'open' if s.door else 'closed'}, {'in' if s.zone else 'outside'} door zone, "
            f"{'person inside' if s.person else 'empty'}, load {s.load_kg:.0f} kg"
        )

    async def _consume(self) -> None:
        while True:
            s = await self.samples.get()
            await self.assess(s)

    async def assess(self, s: Sample) -> None:
        c, prev = self.cfg, self.last
        self.last = s
        moving = abs(s.speed_ms) > MOVING_MS
        if prev is not None:
            was_moving = abs(prev.speed_ms) > MOVING_MS
            if moving:
                self.running_s += s.t - prev.t
            if was_moving and not moving:
                self.trips += 1
                self._reopens = 0
            if prev.door and not s.door:
                self.door_cycles += 1
            reopened = not prev.door and s.door and not moving and self._stopped_since is not None
            if reopened and self.door_cycles and self._door_closed_at_this_stop:
                self._reopens += 1
            if prev.door and not s.door:
                self._door_closed_at_this_stop = True
            if moving:
                self._door_closed_at_this_stop = False
        if moving:
            self._stopped_since = None
        elif self._stopped_since is None:
            self._stopped_since = s.t
        stopped_for = 0.0 if self._stopped_since is None else s.t - self._stopped_since
        top = (c.floors - 1) * c.floor_height_m
        await self._fault("moving_door_open", moving and s.door, self._evidence(s, "moving with the doors open"))
        await self._fault(
            "overspeed",
            abs(s.speed_ms) > c.rated_speed_ms * c.overspeed_ratio,
            self._evidence(s, f"speed above {c.overspeed_ratio:.2f} × rated {c.rated_speed_ms} m/s"),
        )
        await self._fault(
            "overtravel",
            s.height_m > top + c.overtravel_m or s.height_m < -c.overtravel_m,
            self._evidence(s, "beyond the end landings"),
        )
        no_way_out = not moving and (not s.zone or not s.door)
        await self._fault(
            "trapped",
            s.person and no_way_out and stopped_for >= c.trapped_s and (not s.zone or self._arrived_shut(s)),
            self._evidence(s, f"person inside, stopped {stopped_for:.0f} s with no way out"),
        )
        await self._fault(
            "stop_outside_zone",
            not moving and not s.zone and stopped_for >= c.stop_outside_zone_s,
            self._evidence(s, f"stopped {stopped_for:.0f} s outside a door zone"),
        )
        await self._fault(
            "door_reopening",
            self._reopens >= c.reopen_limit,
            self._evidence(s, f"doors re-opened {self._reopens} times at one stop"),
        )
        await self._fault("alarm_button", s.alarm, self._evidence(s, "alarm button pressed"))
        await self._fault("power_loss", not s.power, self._evidence(s, "mains power lost"))
        if prev is None or (abs(prev.speed_ms) > MOVING_MS) != moving or prev.door != s.door:
            await self._put(
                ElevatorStatus(
                    car=c.car,
                    floor=self.floor_of(s.height_m),
                    direction="up" if s.speed_ms > MOVING_MS else "down" if s.speed_ms < -MOVING_MS else "idle",
                    door="open" if s.door else "closed",
                    state="fault" if self.active else "normal",
                    load_kg=s.load_kg,
                    occupied=s.person,
                )
            )

    def _arrived_shut(self, s: Sample) -> bool:
        """In the door zone with the doors shut: a trap only if they never opened at this stop."""
        return not self._door_closed_at_this_stop

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "car": self.cfg.car,
            "trips": self.trips,
            "door_cycles": self.door_cycles,
            "running_h": round(self.running_s / 3600, 3),
            "faults": dict(self.active),
        }
