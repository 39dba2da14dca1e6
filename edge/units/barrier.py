"""The vehicle barrier: the ANPR camera reads a plate, the local allow-list decides, the barrier goes up and
stays up while a vehicle is over the safety loop — it never closes on a car. Works with the cloud away;
the allow-list follows cloud deltas on the ``gallery`` channel like the face gallery does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from edge.drivers.anpr import AnprSource, build_anpr
from edge.drivers.build import build_io
from edge.drivers.io import IO, DriverError
from edge.tasks import run_together
from edge.units.allowlist import Allowlist
from edge.units.barrier_config import BarrierConfig
from edge.units.base import Unit, UnitContext
from protocol.codec import decode
from protocol.envelope import now_ms
from protocol.errors import ProtocolError
from protocol.messages import AlarmRaise, AllowlistDelta, Body, DeviceEvent, GateDecision, PlateRead, RelayState
from protocol.plates import PlateError, normalize
from protocol.topics import Channel, Topic

log = logging.getLogger("civicedge.edge.barrier")


class BarrierUnit(Unit):
    name = "barrier"

    def __init__(self, cfg: BarrierConfig, io: IO | None = None, anpr: AnprSource | None = None) -> None:
        self.cfg = cfg
        self.io = io or build_io(cfg.io)
        self.anpr = anpr or build_anpr(cfg.anpr)
        self.allowlist = Allowlist(cfg.allowlist)
        self.is_open = False
        self.open_until = 0.0
        self.vehicle_seen = False  # a vehicle has been over the loop since the barrier went up
        self.decisions: list[GateDecision] = []
        self._ctx: UnitContext | None = None
        self._wake = asyncio.Event()
        self.closed = False

    async def run(self, ctx: UnitContext) -> None:
        self._ctx = ctx
        ctx.subscribe(Channel.GALLERY, self._on_delta)
        ctx.on_connect(self._announce)
        ctx.register_command("barrier-open", self._cmd_open)
        ctx.register_command("barrier-status", self._cmd_status)
        await self.io.start()
        await self.anpr.start()
        await self._announce()
        try:
            await run_together(
                barrier_anpr=self._watch_plates(),
                barrier_loop=self._watch_loop(),
                barrier_closer=self._closer(),
                barrier_sync_check=self._sync_check(),
            )
        finally:
            self.closed = True
            await self.anpr.close()
            await self.io.close()
            self.allowlist.close()

    def _trusted_now(self) -> int:
        """The clock validity windows are judged by: never earlier than signed commands proved it to be."""
        return self._ctx.trust.now_ms() if self._ctx is not None else now_ms()

    async def _put(self, body: Body) -> None:
        assert self._ctx is not None
        await self._ctx.outbox.put(body)

    def vehicle_present(self) -> bool:
        return bool(self.cfg.loop and self.io.input(self.cfg.loop))

    # --- decisions -------------------------------------------------------------------------------------

    async def _watch_plates(self) -> None:
        while True:
            reading = await self.anpr.read()
            await self.handle_plate(reading.text, reading.confidence)

    async def _decide(self, decision: str, reason: str, plate: str, conf: float, holder: str | None) -> None:
        body = GateDecision(
            door=self.cfg.lane,
            decision=decision,  # type: ignore[arg-type]
            reason=reason,
            method="plate",
            subject_id=holder,
        )
        self.decisions.append(body)
        del self.decisions[:-500]  # recent ones only: a barrier runs for months
        shown = plate if 1 <= len(plate) <= 16 else (plate[:16] or "?")
        await self._put(
            PlateRead(
                lane=self.cfg.lane,
                plate=shown,
                confidence=conf,
                decision="open" if decision == "open" else "deny",
                subject_id=holder,
            )
        )
        await self._put(body)

    async def handle_plate(self, raw: str, confidence: float) -> str:
        try:
            plate = normalize(raw)
        except PlateError:
            await self._decide("deny", "unreadable_plate", raw, confidence, None)
            return "unreadable_plate"
        if confidence < self.cfg.min_confidence:
            await self._decide("deny", "low_confidence", plate, confidence, None)
            return "low_confidence"
        entry = self.allowlist.lookup(plate)
        if entry is None:
            await self._decide("deny", "unknown_plate", plate, confidence, None)
            return "unknown_plate"
        if not entry.valid_at(self._trusted_now()):
            await self._decide("deny", "outside_validity", plate, confidence, entry.holder)
            return "outside_validity"
        reason = f"{entry.kind}_plate"
        if await self.raise_barrier(reason):
            await self._decide("open", reason, plate, confidence, entry.holder)
            return reason
        await self._decide("deny", "barrier_fault", plate, confidence, entry.holder)
        return "barrier_fault"

    # --- the barrier -----------------------------------------------------------------------------------

    async def raise_barrier(self, reason: str) -> bool:
        try:
            await self.io.set(self.cfg.hold_open, True)
        except DriverError as exc:
            await self._put(
                AlarmRaise(
                    key=f"barrier.{self.cfg.lane}.fault",
                    code="barrier.fault",
                    severity="major",
                    message=f"barrier controller not answering: {exc}"[:1000],
                    details={"lane": self.cfg.lane},
                )
            )
            return False
        if not self.is_open:
            self.vehicle_seen = self.vehicle_present()
        self.is_open = True
        self.open_until = time.monotonic() + self.cfg.open_s
        await self._put(RelayState(relay=self.cfg.hold_open, state="on", reason=reason))
        self._wake.set()
        return True

    async def _watch_loop(self) -> None:
        while True:
            name, active = await self.io.changes.get()
            if name != self.cfg.loop:
                continue
            if active:
                self.vehicle_seen = True
            elif self.is_open and self.vehicle_seen:  # the car has passed: close soon
                self.open_until = time.monotonic() + self.cfg.clear_s
            self._wake.set()

    async def _closer(self) -> None:
        """Lower the barrier when its time is up — but never while a vehicle is over the loop."""
        while True:
            self._wake.clear()
            if self.is_open and time.monotonic() >= self.open_until and not self.vehicle_present():
                try:
                    await self.io.set(self.cfg.hold_open, False)
                    self.is_open = False
                    await self._put(
                        RelayState(
                            relay=self.cfg.hold_open,
                            state="off",
                            reason="vehicle_passed" if self.vehicle_seen else "timeout",
                        )
                    )
                except DriverError as exc:
                    log.error("barrier close failed", extra={"error": str(exc)})
            timeout = max(0.05, self.open_until - time.monotonic()) if self.is_open else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    # --- commands and sync -----------------------------------------------------------------------------

    async def _cmd_open(self, args: dict[str, Any]) -> dict[str, Any]:
        ok = await self.raise_barrier("remote")
        body = GateDecision(
            door=self.cfg.lane,
            decision="open" if ok else "deny",
            reason="remote" if ok else "barrier_fault",
            method="remote",
            subject_id=str(args.get("by") or "") or None,
        )
        self.decisions.append(body)
        del self.decisions[:-500]  # recent ones only: a barrier runs for months
        await self._put(body)
        return {"opened": ok}

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "lane": self.cfg.lane,
            "open": self.is_open,
            "vehicle": self.vehicle_present(),
            "allowlist_revision": self.allowlist.revision,
            "plates": len(self.allowlist),
        }

    async def _sync_check(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sync_check_s)
            await self._announce()

    async def _announce(self) -> None:
        assert self._ctx is not None
        have = self.allowlist.revision
        await self._put(
            DeviceEvent(
                code="allowlist.status",
                details={"lane": self.cfg.lane, "revision": have, **self._ctx.trust.sync_details(have)},
            )
        )

    async def _on_delta(self, topic: Topic, payload: bytes) -> None:
        if self.closed:
            return
        assert self._ctx is not None
        have = self.allowlist.revision
        try:
            env = decode(payload, topic)
            delta = env.body
            if not isinstance(delta, AllowlistDelta):
                return  # face gallery deltas are for gates
            if not self._ctx.trust.admit(delta, have):  # signed for this barrier by the document key, and newer
                return  # already applied
        except ProtocolError as exc:
            await self._put(
                DeviceEvent(
                    code="allowlist.rejected",
                    message=f"{exc.reason.value}: {exc.detail}"[:1000],
                    details={"reason": exc.reason.value, "lane": self.cfg.lane, "revision": have},
                )
            )
            return
        if delta.base_revision is not None and delta.base_revision != have:
            details = {"lane": self.cfg.lane, "revision": have, **self._ctx.trust.sync_details(have)}
            await self._put(DeviceEvent(code="allowlist.resync", details=details))
            return
        await asyncio.to_thread(self.allowlist.apply_delta, delta)
        await self._put(
            DeviceEvent(
                code="allowlist.applied",
                details={"lane": self.cfg.lane, "revision": delta.revision, "plates": len(self.allowlist)},
            )
        )
