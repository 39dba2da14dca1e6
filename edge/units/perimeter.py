"""Perimeter zones: IR beams, vibration cable and fence contacts wired as inputs of the I/O board. Each zone is
armed always, never, or on a schedule of local-time windows (and can be armed or disarmed by command until
its schedule next changes); a detector must stay tripped ``debounce_s`` to count (a bird through a beam does
not); a cut or shorted line (the board's end-of-line status, wired as the zone's ``tamper`` input) is an alarm
whether or not the zone is armed. An intrusion carries the zone, its kind and the time, and a still from the
linked camera when one is configured.

| alarm key | when | severity |
|---|---|---|
| ``perimeter.<zone>.intrusion`` | armed zone tripped for ``debounce_s`` | critical |
| ``perimeter.<zone>.tamper`` | line cut / shorted (any time) | major |
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from edge.drivers.build import build_io
from edge.drivers.camera import FrameSource, open_camera
from edge.drivers.io import IO
from edge.units.alarms import AlarmSet
from edge.units.base import Unit, UnitContext
from edge.units.community_config import PerimeterConfig, Zone
from edge.units.media import jpeg_snapshot
from protocol.envelope import now_ms
from protocol.messages import DeviceEvent

log = logging.getLogger("civicedge.edge.perimeter")
TICK_S = 0.05


def in_window(window: str, t: dt.time) -> bool:
    a, b = (dt.time.fromisoformat(x) for x in window.split("-"))
    return a <= t < b if a <= b else t >= a or t < b  # a window may run past midnight


class PerimeterUnit(Unit):
    name = "perimeter"

    def __init__(self, cfg: PerimeterConfig, io: IO | None = None, camera: FrameSource | None = None) -> None:
        self.cfg = cfg
        self.io = io if io is not None else build_io(cfg.io)
        self.camera = camera
        self.tz = ZoneInfo(cfg.timezone)
        self.override: dict[str, bool] = {}  # zone → armed, until its schedule next changes
        self._sched: dict[str, bool] = {}
        self.armed: dict[str, bool] = {}
        self._since: dict[str, float] = {}  # zone → when its detector tripped
        self._alarmed_at: dict[str, float] = {}
        self.intrusions: list[dict[str, Any]] = []
        self.alarms: AlarmSet | None = None
        self._ctx: UnitContext | None = None
        self.clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(self.tz)  # tests move it

    async def run(self, ctx: UnitContext) -> None:
        self._ctx = ctx
        self.alarms = AlarmSet(ctx.outbox, "perimeter")
        ctx.register_command("perimeter-arm", self._cmd_arm)
        ctx.register_command("perimeter-status", self._cmd_status)
        if self.camera is None and self.cfg.camera is not None:
            self.camera = open_camera(self.cfg.camera)
        await self.io.start()
        try:
            while True:
                await self._tick()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_S):
                        await self.io.changes.get()
        finally:
            await self.io.close()
            if self.camera is not None:
                await self.camera.close()

    def scheduled(self, z: Zone) -> bool:
        if z.armed != "schedule":
            return z.armed == "always"
        t = self.clock().time()
        return any(in_window(w, t) for w in z.schedule)

    async def _tick(self) -> None:
        assert self.alarms is not None and self._ctx is not None
        now = time.monotonic()
        for zid, z in self.cfg.zones.items():
            sched = self.scheduled(z)
            if self._sched.get(zid) is not None and self._sched[zid] != sched:
                self.override.pop(zid, None)  # the schedule moved on: a manual arm/disarm ends
            self._sched[zid] = sched
            armed = self.override.get(zid, sched)
            if self.armed.get(zid) != armed:
                await self._armed(zid, armed)
            if z.tamper:
                cut = self.io.input(z.tamper)
                await self.alarms.set(
                    f"{zid}.tamper",
                    cut,
                    "major",
                    f"zone {zid}: detector line cut or shorted",
                    "line restored",
                    zone=zid,
                )
            tripped = self.io.input(z.input)
            if not tripped:
                self._since.pop(zid, None)
                if self.alarms.is_active(f"{zid}.intrusion"):
                    await self.alarms.set(f"{zid}.intrusion", False, "critical", "", "zone restored")
                continue
            since = self._since.setdefault(zid, now)
            if not armed or now - since < z.debounce_s:
                continue
            last = self._alarmed_at.get(zid)
            if self.alarms.is_active(f"{zid}.intrusion") and last is not None and now - last < self.cfg.retrigger_s:
                continue
            await self._intrusion(zid, z)

    async def _armed(self, zid: str, armed: bool) -> None:
        assert self._ctx is not None
        self.armed[zid] = armed
        await self._ctx.outbox.put(
            DeviceEvent(code="perimeter.armed" if armed else "perimeter.disarmed", details={"zone": zid})
        )
        await self._ctx.outbox.put_reading(f"perimeter.{zid}.armed", 1.0 if armed else 0.0)
        if not armed and self.alarms is not None:  # disarming ends an intrusion alarm (tamper stays)
            await self.alarms.set(f"{zid}.intrusion", False, "critical", "", "zone disarmed")

    async def _intrusion(self, zid: str, z: Zone) -> None:
        assert self.alarms is not None
        self._alarmed_at[zid] = time.monotonic()
        at = now_ms()
        ref = await self._snapshot(zid, at) if z.snapshot and self.camera is not None else None
        key = f"perimeter.{zid}.intrusion"
        if key in self.alarms.active:  # a re-trigger while still active: raise again (an occurrence)
            del self.alarms.active[key]
        details: dict[str, Any] = {"zone": zid, "kind": z.kind, "at_ms": at}
        if ref:
            details["snapshot_ref"] = ref
        self.intrusions.append(details)
        await self.alarms.set(
            f"{zid}.intrusion", True, "critical", f"intrusion in zone {zid} ({z.kind.replace('_', ' ')})", **details
        )

    async def _snapshot(self, zid: str, at: int) -> str | None:
        import cv2

        assert self.camera is not None and self._ctx is not None
        try:
            frame = await asyncio.wait_for(self.camera.read(), 2)
        except Exception as exc:  # no still is no reason to hold the alarm back
            log.warning("perimeter snapshot failed", extra={"zone": zid, "error": str(exc)})
            return None
        ref = f"perimeter-{zid}-{at}".lower()[:64]
        small = cv2.resize(frame.rgb, (320, 240), interpolation=cv2.INTER_AREA)
        snap = jpeg_snapshot(small, ref, "perimeter", 60_000, ((70, 1.0), (50, 0.6)))
        if snap is None:
            return None
        await self._ctx.outbox.put(snap[0])
        return ref

    async def _cmd_arm(self, args: dict[str, Any]) -> dict[str, Any]:
        from edge.commands import CommandError

        zone, mode = str(args.get("zone", "all")), args.get("armed")
        zones = list(self.cfg.zones) if zone == "all" else [zone]
        if any(z not in self.cfg.zones for z in zones):
            raise CommandError(f"no zone {zone!r}; zones: {sorted(self.cfg.zones)}")
        if mode not in (True, False, "schedule"):
            raise CommandError('args.armed must be true, false or "schedule"')
        for z in zones:
            if mode == "schedule":
                self.override.pop(z, None)
            else:
                self.override[z] = bool(mode)
        await self._tick()
        return {"armed": {z: self.armed.get(z) for z in zones}}

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.alarms is not None
        return {
            z: {
                "armed": self.armed.get(z),
                "tripped": self.io.input(c.input),
                "tamper": bool(c.tamper and self.io.input(c.tamper)),
                "override": self.override.get(z),
            }
            for z, c in self.cfg.zones.items()
        }
