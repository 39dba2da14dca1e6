"""The parking lift unit: a multi-storey tower's lifts driven through their PLC over Modbus.

State comes from the PLC (never from timers alone): the unit polls each lift's status block, sees jobs accepted
and done, interlocks and faults. **Interlocks win**: a lift with an open interlock gets no commands, a fault or
e-stop raises an alarm, and the paused job resumes only when an operator resets it (``lift-reset``) with the
interlocks closed again. If the PLC stops answering for ``watchdog_s`` the unit raises ``comm_lost`` and holds
all work (the PLC, hearing nothing from the gateway, stops motion by itself).

Scheduling (``policy``):
* ``fifo`` — the baseline: jobs in arrival order, each car to the nearest free bay (lowest floor), no fetching
  ahead.
* ``smart`` — retrievals before stores (a driver waits at the exit; a stored car waits in the entrance bay)
  unless a store has waited ``store_patience_s``; among retrievals the earliest-requested first (no starvation)
  but a lift already near a requested car takes it; cars expected to leave soon go to low floors and long stays
  high; arriving drivers are sent to the entrance with the shortest queue; a driver recognised at the pay screen
  (``lift-prefetch``) has the car fetched before asking; an idle lift waits at the floor of the next expected
  departure.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from edge.drivers.modbus import bounded
from edge.store import open_sqlite
from edge.tasks import raise_if_cancelled, run_together
from edge.units.base import Unit, UnitContext
from edge.units.parking_config import ParkingLiftConfig
from protocol import new_id
from protocol import parking as p
from protocol.messages import AlarmClear, AlarmRaise, Body, DeviceEvent, LiftRequest, LiftResult, LiftStatus

log = logging.getLogger("civicedge.edge.parking")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class ParkingError(Exception):
    """A request the tower cannot take; the message is for the driver's screen and the event log."""


@dataclass
class Job:
    id: str
    kind: Literal["store", "retrieve", "move"]
    subject: str
    lift: int
    floor: int = 0
    bay: int = 0
    by: str = "plate"
    created: float = 0.0  # tower clock
    requested: float | None = None  # when the driver asked (prefetched retrievals run before that)
    started: float | None = None
    seq: int | None = None
    prefetch: bool = False
    done: asyncio.Future[LiftResult] | None = None


@dataclass
class LiftView:
    index: int
    state: int = p.STATE_IDLE
    floor: int = 0
    accepted: int = 0
    done: int = 0
    fault: int = 0
    interlocks: int = p.ALL_CLOSED
    vehicle: tuple[int, int] | None = None
    eta_s: float = 0.0
    result: int = 0
    seq: int = 0  # last sequence number this unit issued
    job: Job | None = None
    queue: list[Job] = field(default_factory=list)
    moving_to: int | None = None  # floor of the last pre-positioning move

    @property
    def safe(self) -> bool:
        return self.interlocks == p.ALL_CLOSED and self.state not in (p.STATE_FAULT, p.STATE_ESTOP, p.STATE_MAINTENANCE)


class ParkingLiftUnit(Unit):
    name = "parking_lift"

    def __init__(self, cfg: ParkingLiftConfig) -> None:
        self.cfg = cfg
        self.lifts = [LiftView(i) for i in range(cfg.lifts)]
        self.comm_ok = True
        self._last_ok = time.monotonic()
        self._client: Any = None
        self._ctx: UnitContext | None = None
        self._wake = asyncio.Event()
        self._alarms: dict[str, str] = {}  # raised alarm key → code
        self.results: list[LiftResult] = []
        self.expected: dict[str, float] = {}  # subject → expected departure (tower clock)
        self.at_exit: dict[str, Job] = {}  # prefetched cars waiting in the exit area for their driver
        self._db = open_sqlite(cfg.state)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS bays (lift INTEGER, floor INTEGER, bay INTEGER, subject TEXT UNIQUE, "
            "PRIMARY KEY (lift, floor, bay))"
        )
        self.cars: dict[str, tuple[int, int, int]] = {
            s: (lf, fl, b) for lf, fl, b, s in self._db.execute("SELECT lift, floor, bay, subject FROM bays")
        }
        self._lock = asyncio.Lock()
        self.ready = asyncio.Event()  # set after the first full read of the PLC

    def now(self) -> float:
        return time.monotonic() * self.cfg.clock_scale

    # --- plumbing --------------------------------------------------------------------------------------

    async def _connect(self) -> None:
        from edge.drivers.modbus import modbus_client

        self._client = modbus_client(self.cfg.plc, self.cfg.timeout_s)
        await self._client.connect()

    async def _put(self, body: Body) -> None:
        assert self._ctx is not None
        await self._ctx.outbox.put(body)

    async def _alarm(self, key: str, code: str, severity: str, message: str, **details: Any) -> None:
        if key in self._alarms:
            return
        self._alarms[key] = code
        await self._put(
            AlarmRaise(
                key=key,
                code=code,
                severity=severity,  # type: ignore[arg-type]
                message=message,
                details={"tower": self.cfg.tower, **details},
            )
        )

    async def _clear(self, key: str, message: str) -> None:
        code = self._alarms.pop(key, None)
        if code is not None:
            await self._put(AlarmClear(key=key, code=code, message=message))

    async def run(self, ctx: UnitContext) -> None:
        self._ctx = ctx
        for name, handler in (
            ("lift-store", self._cmd_store),
            ("lift-retrieve", self._cmd_retrieve),
            ("lift-prefetch", self._cmd_prefetch),
            ("lift-reset", self._cmd_reset),
            ("lift-status", self._cmd_status),
        ):
            ctx.register_command(name, handler)
        await self._connect()
        try:
            await run_together(
                parking_poll=self._poll_loop(),
                parking_dispatch=self._dispatch_loop(),
                parking_telemetry=self._telemetry_loop(),
            )
        finally:
            if self._client is not None:
                self._client.close()
            self._db.close()

    async def _telemetry_loop(self) -> None:
        total = self.cfg.lifts * self.cfg.floors * self.cfg.bays
        while True:
            assert self._ctx is not None
            ob = self._ctx.outbox
            await ob.put_reading(f"{self.cfg.tower}.occupancy", len(self.cars) / total, unit="ratio")
            await ob.put_reading(f"{self.cfg.tower}.parked", float(len(self.cars)))
            for lf in self.lifts:
                await ob.put_reading(f"{self.cfg.tower}.{lf.index}.queue", float(len(lf.queue)))
            await asyncio.sleep(self.cfg.telemetry_s)

    # --- the PLC ---------------------------------------------------------------------------------------

    async def _read(self, lf: LiftView) -> None:
        rr = await bounded(
            self._client.read_input_registers(p.base(lf.index), count=13, device_id=self.cfg.unit_id),
            self.cfg.timeout_s,
        )
        if rr.isError():
            raise ConnectionError(str(rr))
        r = rr.registers
        if len(r) < 13:  # a late answer to an earlier request, or a garbled frame: a transport fault, not news
            raise ConnectionError(f"PLC answered {len(r)} registers for lift {lf.index}, expected 13")
        before = (lf.state, lf.fault, lf.interlocks)
        lf.state, lf.floor, lf.accepted, lf.done = r[p.IR_STATE], r[p.IR_FLOOR], r[p.IR_ACCEPTED_SEQ], r[p.IR_DONE_SEQ]
        lf.fault, lf.interlocks, lf.result = r[p.IR_FAULT], r[p.IR_INTERLOCKS], r[p.IR_RESULT]
        lf.vehicle = (r[p.IR_VEHICLE_LEN_CM], r[p.IR_VEHICLE_HEIGHT_CM]) if r[p.IR_VEHICLE] else None
        lf.eta_s = r[p.IR_ETA_DS] / 10
        if (lf.state, lf.fault, lf.interlocks) != before:
            await self._on_change(lf)

    async def _write(self, lf: LiftView, cmd: int, floor: int = 0, bay: int = 0) -> int:
        lf.seq = (lf.seq % 0xFFFF) + 1
        rr = await bounded(
            self._client.write_registers(p.base(lf.index), [cmd, floor, bay, lf.seq], device_id=self.cfg.unit_id),
            self.cfg.timeout_s,
        )
        if rr.isError():
            raise ConnectionError(str(rr))
        return lf.seq

    async def _poll_loop(self) -> None:
        from pymodbus.exceptions import ModbusException

        while True:
            try:
                async with self._lock:
                    for lf in self.lifts:
                        await self._read(lf)
                self._last_ok = time.monotonic()
                self.ready.set()
                if not self.comm_ok:
                    self.comm_ok = True
                    await self._clear(f"lift.{self.cfg.tower}.comm_lost", "PLC answering again")
                await self._progress()
            except (TimeoutError, ModbusException, ConnectionError, OSError) as exc:
                raise_if_cancelled(exc)
                if self.comm_ok and time.monotonic() - self._last_ok > self.cfg.watchdog_s:
                    self.comm_ok = False
                    await self._alarm(
                        f"lift.{self.cfg.tower}.comm_lost",
                        "lift.comm_lost",
                        "critical",
                        f"no answer from the tower PLC for {self.cfg.watchdog_s:.0f} s: work held, PLC stops itself",
                        error=str(exc)[:200],
                    )
            await asyncio.sleep(self.cfg.poll_s)

    async def _on_change(self, lf: LiftView) -> None:
        await self._put(
            LiftStatus(
                lift=f"{self.cfg.tower}-{lf.index}",
                state=p.STATES[lf.state],  # type: ignore[arg-type]
                floor=lf.floor,
                queue=len(lf.queue),
                interlocks={n: bool(lf.interlocks & (1 << i)) for i, n in enumerate(p.INTERLOCKS)},
            )
        )
        key = f"lift.{self.cfg.tower}.{lf.index}.fault"
        if lf.state in (p.STATE_FAULT, p.STATE_ESTOP):
            what = p.FAULTS[lf.fault] if lf.fault < len(p.FAULTS) else "fault"
            severity = "critical" if what in ("person_detected", "estop", "gateway_lost") else "major"
            await self._alarm(
                key,
                "lift.fault",
                severity,
                f"lift {lf.index} stopped: {what}; reset when safe",
                lift=lf.index,
                fault=what,
            )
        elif lf.safe:
            await self._clear(key, f"lift {lf.index} reset")
        self._wake.set()

    async def _progress(self) -> None:
        """Finish jobs the PLC reports done; notice refusals."""
        for lf in self.lifts:
            job = lf.job
            if job is None or job.seq is None or lf.accepted < job.seq:
                continue
            if lf.result == p.RESULT_REFUSED and lf.accepted == job.seq and lf.done < job.seq:
                reason = p.FAULTS[lf.fault] if 0 < lf.fault < len(p.FAULTS) else "refused"
                await self._finish(lf, ok=False, reason=reason)
            elif lf.done >= job.seq:
                await self._finish(lf, ok=True)

    async def _finish(self, lf: LiftView, ok: bool, reason: str | None = None) -> None:
        job = lf.job
        assert job is not None
        lf.job = None
        now = self.now()
        if ok and job.kind == "store":
            self.cars[job.subject] = (lf.index, job.floor, job.bay)
            self._db.execute(
                "INSERT OR REPLACE INTO bays VALUES (?, ?, ?, ?)", (lf.index, job.floor, job.bay, job.subject)
            )
        elif ok and job.kind == "retrieve":
            self.cars.pop(job.subject, None)
            self._db.execute("DELETE FROM bays WHERE subject = ?", (job.subject,))
        if ok and job.kind == "retrieve" and job.requested is None:  # prefetched, the driver has not asked yet
            self.at_exit[job.subject] = job
            self._wake.set()
            return
        start = job.requested if job.requested is not None else job.created
        if job.kind != "move":
            res = LiftResult(
                request_id=job.id,
                kind=job.kind,
                ok=ok,
                duration_s=max(0.0, now - start),
                bay=f"{lf.index}-{job.floor}-{job.bay}",
                reason=reason,
            )
            self.results.append(res)
            await self._put(res)
            if job.done is not None and not job.done.done():
                job.done.set_result(res)
        self._wake.set()

    # --- requests --------------------------------------------------------------------------------------

    def _free_bays(self, lift: int) -> list[tuple[int, int]]:
        taken = {(f, b) for (lf, f, b) in self.cars.values() if lf == lift}
        taken |= {(j.floor, j.bay) for j in [*self.lifts[lift].queue, self.lifts[lift].job] if j and j.kind == "store"}
        return [(f, b) for f in range(self.cfg.floors) for b in range(1, self.cfg.bays + 1) if (f, b) not in taken]

    def choose_entrance(self) -> int:
        """Where to send an arriving driver: the lift with the least work (smart) or round robin (fifo)."""
        if self.cfg.policy == "fifo":
            self._rr = (getattr(self, "_rr", -1) + 1) % len(self.lifts)
            return self._rr
        usable = [lf for lf in self.lifts if lf.safe] or self.lifts
        return min(usable, key=lambda lf: (len(lf.queue) + (lf.job is not None), lf.index)).index

    def _bay_for(self, lift: int, stay_s: float | None) -> tuple[int, int]:
        free = self._free_bays(lift)
        if not free:
            raise ParkingError("the tower is full")
        if self.cfg.policy == "fifo" or stay_s is None:
            return free[0]  # nearest free bay
        # short stays low, long stays high: the floor rank follows the expected stay (4 h and more on top)
        want = min(self.cfg.floors - 1, int(self.cfg.floors * min(stay_s, 4 * 3600) / (4 * 3600 + 1)))
        return min(free, key=lambda fb: (abs(fb[0] - want), fb[0], fb[1]))

    @staticmethod
    def _check_subject(subject: str) -> None:
        if not _ID.match(subject) or len(subject) > 64:
            raise ParkingError(f"{subject!r} is not a driver id (letters, digits, _ . : -; a plate maps to a holder)")

    async def store(self, subject: str, lift: int, by: str = "plate", stay_s: float | None = None) -> Job:
        self._check_subject(subject)
        if not 0 <= lift < len(self.lifts):
            raise ParkingError(f"no lift {lift} in this tower (0–{len(self.lifts) - 1})")
        if subject in self.cars or any(j.subject == subject for lf in self.lifts for j in lf.queue):
            raise ParkingError(f"{subject} is already parked")
        lf = self.lifts[lift]
        if lf.vehicle is not None:
            ln, ht = lf.vehicle
            if ln > self.cfg.max_len_cm:
                raise ParkingError(f"vehicle too long ({ln} cm > {self.cfg.max_len_cm} cm)")
            if ht > self.cfg.max_height_cm:
                raise ParkingError(f"vehicle too high ({ht} cm > {self.cfg.max_height_cm} cm)")
        floor, bay = self._bay_for(lift, stay_s)
        if stay_s is not None:
            self.expected[subject] = self.now() + stay_s
        job = Job(new_id(), "store", subject, lift, floor, bay, by, created=self.now())
        return await self._enqueue(job)

    async def retrieve(self, subject: str, by: str = "plate", prefetch: bool = False) -> Job:
        self._check_subject(subject)
        for lf in self.lifts:  # already on its way (prefetched): the driver's clock starts now
            for j in [lf.job, *lf.queue]:
                if j is not None and j.kind == "retrieve" and j.subject == subject:
                    if not prefetch and j.requested is None:
                        j.requested = self.now()
                    return j
        if not prefetch and subject in self.at_exit:  # fetched ahead: the car is already waiting
            job = self.at_exit.pop(subject)
            job.requested = self.now()
            res = LiftResult(
                request_id=job.id,
                kind="retrieve",
                ok=True,
                duration_s=0.0,
                bay=f"{job.lift}-{job.floor}-{job.bay}",
                reason="prefetched",
            )
            self.results.append(res)
            await self._put(res)
            job.done = asyncio.get_running_loop().create_future()
            job.done.set_result(res)
            return job
        if subject not in self.cars:
            raise ParkingError(f"no car for {subject} in this tower")
        lift, floor, bay = self.cars[subject]
        job = Job(new_id(), "retrieve", subject, lift, floor, bay, by, created=self.now(), prefetch=prefetch)
        if not prefetch:
            job.requested = job.created
        return await self._enqueue(job)

    async def _enqueue(self, job: Job) -> Job:
        job.done = asyncio.get_running_loop().create_future()
        lf = self.lifts[job.lift]
        lf.queue.append(job)
        eta = self.eta(job)
        await self._put(
            LiftRequest(
                request_id=job.id,
                kind=job.kind,  # type: ignore[arg-type]
                by=job.by,  # type: ignore[arg-type]
                lift=f"{self.cfg.tower}-{job.lift}",
                subject_id=job.subject,
                bay=f"{job.lift}-{job.floor}-{job.bay}",
                eta_s=round(eta, 1),
            )
        )
        self._wake.set()
        return job

    def eta(self, job: Job) -> float:
        """A rough ETA: the lift's current job plus one average job per queued request ahead."""
        lf = self.lifts[job.lift]
        ahead = lf.queue.index(job) if job in lf.queue else 0
        return lf.eta_s + 50.0 * ahead + 45.0

    # --- dispatching -----------------------------------------------------------------------------------

    def _pick(self, lf: LiftView) -> Job | None:
        if not lf.queue:
            return None
        if self.cfg.policy == "fifo":
            return lf.queue[0]
        now = self.now()
        stores = [j for j in lf.queue if j.kind == "store"]
        urgent = [j for j in stores if now - j.created > self.cfg.store_patience_s]
        if urgent:
            return urgent[0]
        asked = [j for j in lf.queue if j.kind == "retrieve" and j.requested is not None]
        if asked:
            oldest = min(asked, key=lambda j: j.requested or 0)
            near = [
                j for j in asked if abs(j.floor - lf.floor) <= 1 and (j.requested or 0) - (oldest.requested or 0) < 30
            ]
            return near[0] if near else oldest
        prefetched = [j for j in lf.queue if j.kind == "retrieve"]
        if prefetched:  # a driver is on the way to the exit
            return prefetched[0]
        return stores[0] if stores else None

    async def _dispatch_loop(self) -> None:
        while True:
            self._wake.clear()
            if self.comm_ok:
                for lf in self.lifts:
                    if lf.job is None and lf.safe and lf.state == p.STATE_IDLE:
                        await self._start_next(lf)
            try:
                async with asyncio.timeout(self.cfg.poll_s * 2):
                    await self._wake.wait()
            except TimeoutError as exc:  # (3.11 may report a cancel that raced the timeout as the timeout)
                raise_if_cancelled(exc)

    async def _start_next(self, lf: LiftView) -> None:
        job = self._pick(lf)
        if job is None:
            await self._preposition(lf)
            return
        if job.kind == "store" and lf.vehicle is None:
            return  # the car is not in the entrance bay yet
        cmd = p.CMD_STORE if job.kind == "store" else p.CMD_RETRIEVE
        async with self._lock:
            try:
                job.seq = await self._write(lf, cmd, job.floor, job.bay)
            except Exception as exc:
                raise_if_cancelled(exc)
                log.warning("command not written", extra={"error": str(exc)})
                return
        lf.queue.remove(job)
        lf.job, job.started = job, self.now()

    async def _preposition(self, lf: LiftView) -> None:
        if self.cfg.policy != "smart":
            return
        mine = [(t, s) for s, t in self.expected.items() if s in self.cars and self.cars[s][0] == lf.index]
        if not mine:
            return
        _t, subject = min(mine)
        floor = self.cars[subject][1]
        if floor in (lf.floor, lf.moving_to):
            return
        async with self._lock:
            try:
                seq = await self._write(lf, p.CMD_MOVE, floor, 1)
            except Exception as exc:  # a move ahead of time is a nicety: not now, then
                raise_if_cancelled(exc)
                return
            lf.job = Job(new_id(), "move", subject, lf.index, floor, 1, created=self.now(), seq=seq)
            lf.moving_to = floor

    # --- commands --------------------------------------------------------------------------------------

    async def _cmd_store(self, args: dict[str, Any]) -> dict[str, Any]:
        from edge.commands import CommandError

        try:
            lift = int(args["lift"]) if "lift" in args else self.choose_entrance()
            job = await self.store(str(args["subject"]), lift, str(args.get("by", "plate")), args.get("stay_s"))
        except (KeyError, ValueError) as exc:
            raise CommandError(f"lift-store needs args.subject (and lift, stay_s): {exc}") from None
        except ParkingError as exc:
            await self._put(
                DeviceEvent(code="lift.refused", message=str(exc), details={"subject": args.get("subject")})
            )
            raise CommandError(str(exc)) from None
        return {
            "request_id": job.id,
            "lift": job.lift,
            "bay": f"{job.floor}-{job.bay}",
            "eta_s": round(self.eta(job), 1),
        }

    async def _cmd_retrieve(self, args: dict[str, Any]) -> dict[str, Any]:
        from edge.commands import CommandError

        try:
            job = await self.retrieve(str(args["subject"]), str(args.get("by", "ticket")))
        except KeyError:
            raise CommandError("lift-retrieve needs args.subject") from None
        except ParkingError as exc:
            raise CommandError(str(exc)) from None
        return {"request_id": job.id, "lift": job.lift, "eta_s": round(self.eta(job), 1)}

    async def _cmd_prefetch(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.cfg.policy != "smart":
            return {"prefetch": False, "reason": "the fifo policy does not fetch ahead"}
        try:
            job = await self.retrieve(str(args["subject"]), str(args.get("by", "face")), prefetch=True)
        except (KeyError, ParkingError) as exc:
            return {"prefetch": False, "reason": str(exc)}
        return {"prefetch": True, "request_id": job.id}

    async def _cmd_reset(self, args: dict[str, Any]) -> dict[str, Any]:
        from edge.commands import CommandError

        lf = self.lifts[int(args.get("lift", 0))]
        if lf.interlocks != p.ALL_CLOSED:
            open_ = [n for i, n in enumerate(p.INTERLOCKS) if not lf.interlocks & (1 << i)]
            raise CommandError(f"interlocks still open: {', '.join(open_)}; close them before the reset")
        async with self._lock:
            await self._write(lf, p.CMD_RESET)
        self._wake.set()
        return {"reset": lf.index, "by": args.get("by")}

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "tower": self.cfg.tower,
            "comm_ok": self.comm_ok,
            "parked": len(self.cars),
            "bays": self.cfg.lifts * self.cfg.floors * self.cfg.bays,
            "lifts": [
                {
                    "lift": lf.index,
                    "state": p.STATES[lf.state],
                    "floor": lf.floor,
                    "queue": len(lf.queue),
                    "busy": lf.job is not None,
                }
                for lf in self.lifts
            ],
        }
