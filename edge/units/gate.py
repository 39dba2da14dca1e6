"""The community gate: face (and temperature) at the door, visitors confirmed by a resident, the lock and the
door contact watched, fail-safe on fire and fail-secure when the lock controller is gone.

Decisions use local data only (gallery, visitor passes), so residents get in with the cloud down for a week;
every decision is an event in the outbox and reaches the cloud when the link is back. Only the visitor
confirmation needs the cloud, and it says so at once when the cloud is away instead of leaving anyone waiting.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import Counter, deque
from typing import Any

from edge.drivers.build import build_io
from edge.drivers.camera import Frame, FrameSource, WithThermal, open_camera, source_commands
from edge.drivers.io import IO, DriverError
from edge.i18n import prompt_text
from edge.inference import DelegateError
from edge.status import Rate
from edge.tasks import run_together
from edge.units.base import Unit, UnitContext
from edge.units.gate_config import GateConfig
from edge.units.media import jpeg_snapshot
from edge.units.passes import PassBook
from edge.vision.gallery import Gallery
from edge.vision.pipeline import Decision, GateVision
from protocol import new_id
from protocol.codec import decode
from protocol.envelope import now_ms
from protocol.errors import ProtocolError
from protocol.messages import (
    AlarmClear,
    AlarmRaise,
    Body,
    DeviceEvent,
    GalleryDelta,
    GateDecision,
    RelayState,
    TemperatureScreening,
    VisitorRequest,
)
from protocol.topics import Channel, Topic

log = logging.getLogger("civicedge.edge.gate")
KEEP = 500  # recent decisions and prompts kept in memory (a gate runs for months)
THERMAL_SILENT_S = 5.0  # a thermal camera without frames this long: alarm (the door opens for nobody meanwhile)


class GateUnit(Unit):
    name = "gate"

    def __init__(self, cfg: GateConfig, camera: FrameSource | None = None, io: IO | None = None) -> None:
        self.cfg = cfg
        self.io = io or build_io(cfg.io)
        self.camera: Any = camera  # the frame source once the unit runs (tests drive a simulated one)
        self.gallery = Gallery(cfg.gallery, cfg.secret.encode())
        self.passes = PassBook(cfg.gallery.with_name(cfg.gallery.stem + "-passes.db"))
        self.vision: GateVision | None = None
        self.fire_mode = False
        self.lock_faulted = False  # a lock_fault alarm is raised and not yet cleared
        self.grant_until = 0.0
        self.door_open_since: float | None = None
        self.prompts: list[str] = []  # what the screen showed, latest last (also sent as events)
        self.decisions: deque[GateDecision] = deque(maxlen=KEEP)  # recent ones (status page, tests)
        self.outcomes: Counter[str] = Counter()  # what the vision concluded, per approach (status, tests)
        self._held_alarm = False
        self._held_task: asyncio.Task[None] | None = None
        self._last: dict[str, float] = {}  # subject → monotonic time of its last decision
        self._visitor_until = 0.0
        self._visitor_frame: Frame | None = None
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ctx: UnitContext | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.last_frame: Frame | None = None
        self.closed = False
        self.decided_at: deque[float] = deque(
            maxlen=KEEP
        )  # when each of self.decisions was made (wall clock, for the status page)
        self.camera_rate = Rate()
        self._faults: set[str] = set()  # standing fault alarms raised and not yet cleared
        self.thermal_rate = Rate()

    # --- wiring ------------------------------------------------------------------------------------

    def _open_camera(self) -> FrameSource:
        camera = open_camera(self.cfg.camera)
        if self.cfg.thermal_camera is None:
            return camera
        from edge.drivers.mlx90640 import open_mlx90640

        assert self.cfg.vision.thermal is not None
        mlx = self.cfg.thermal_camera
        # thermal frames at most one full frame (two subpages) and a little older than the RGB frame; the array
        # opens on its own thread and is retried there (gate.thermal_fault meanwhile), the RGB camera works on
        fresh_s = 2 / mlx.refresh_hz + 0.1
        return WithThermal(
            camera, None, self.cfg.vision.thermal.frames, max_age_s=fresh_s, opener=lambda: open_mlx90640(mlx)
        )

    async def run(self, ctx: UnitContext) -> None:
        self._ctx = ctx
        for name, handler in (
            ("visitor-answer", self._cmd_visitor_answer),
            ("visitor-pass", self._cmd_visitor_pass),
            ("keypad", self._cmd_keypad),
            ("open-door", self._cmd_open_door),
            ("gate-status", self._cmd_status),
            ("enroll", self._cmd_enroll),
        ):
            ctx.register_command(name, handler)
        ctx.subscribe(Channel.GALLERY, self._on_gallery)
        ctx.on_connect(self._announce_gallery)
        if self.camera is None:  # opened before the models load; one that fails is retried by the camera loop
            with contextlib.suppress(Exception):
                self.camera = await asyncio.to_thread(self._open_camera)
        try:
            self.vision = await asyncio.to_thread(GateVision, self.gallery, self.cfg.vision)
        except (DelegateError, OSError, RuntimeError, ValueError) as exc:
            # a delegate library or a model that cannot load: faces cannot be checked, so the door stays shut,
            # says why on the console, and the rest of the gate (fire input, passes, visitors) keeps working
            log.error("vision cannot start", extra={"door": self.cfg.door, "error": str(exc)})
            await self._alarm("vision_fault", "critical", f"face checks cannot start: {exc}"[:1000])
        try:
            await self.io.start()
            await self._lock(False, "startup")  # fail secure whatever the relay was doing before
        except DriverError as exc:
            await self._lock_fault(exc)
        await self._announce_gallery()
        if not self.cfg.vision.liveness.enabled:
            log.warning("liveness checks are off", extra={"door": self.cfg.door})
            await self._alarm(
                "liveness_off", "warning", "liveness checks are off: a photo of a resident opens this door"
            )
        try:
            await run_together(
                gate_inputs=self._watch_inputs(),
                gate_camera=self._watch_camera(),
                gate_sync_check=self._sync_check(),
            )
        finally:
            self.closed = True  # the uplink may still hand over a gallery message: it is not for a closed gallery
            for t in self._tasks:
                t.cancel()
            if self.camera is not None:
                await self.camera.close()
            await self.io.close()
            if self.vision is not None:
                self.vision.close()
            self.gallery.close()
            self.passes.close()

    async def _put(self, body: Body) -> None:
        assert self._ctx is not None
        await self._ctx.outbox.put(body)

    async def _prompt(self, text: str, **values: Any) -> None:
        """Show a prompt in the gate's language (``text`` is the catalog's English source)."""
        shown = prompt_text(self.cfg.language, text).format(**values) if text else ""
        if shown and (not self.prompts or self.prompts[-1] != shown):
            self.prompts.append(shown)
            del self.prompts[:-KEEP]
            await self._put(DeviceEvent(code="gate.prompt", message=shown, details={"door": self.cfg.door}))

    async def _alarm(self, what: str, severity: str, message: str, **details: Any) -> None:
        await self._put(
            AlarmRaise(
                key=f"gate.{self.cfg.door}.{what}",
                code=f"gate.{what}",
                severity=severity,  # type: ignore[arg-type]
                message=message,
                details={"door": self.cfg.door, **details},
            )
        )

    async def _clear(self, what: str, message: str = "") -> None:
        await self._put(AlarmClear(key=f"gate.{self.cfg.door}.{what}", code=f"gate.{what}", message=message))

    async def _decide(self, decision: str, reason: str, method: str, d: Decision | None = None, **kw: Any) -> None:
        body = GateDecision(
            door=self.cfg.door,
            decision=decision,  # type: ignore[arg-type]
            reason=reason,
            method=method,  # type: ignore[arg-type]
            subject_id=kw.get("subject") or (d.resident_id if d else None),
            score=d.score if d and d.resident_id else None,
            temperature_c=d.thermal.temperature_c if d and d.thermal and d.thermal.temperature_c else None,
            liveness=d.liveness.score if d and d.liveness else None,
            latency_ms=d.timings_ms.get("total_ms") if d else None,
        )
        self.decisions.append(body)
        self.decided_at.append(time.time())
        await self._put(body)

    # --- the lock -----------------------------------------------------------------------------------

    async def _lock(self, open_: bool, reason: str) -> None:
        await self.io.set(self.cfg.lock, open_)
        await self._lock_ok()
        await self._put(RelayState(relay=self.cfg.lock, state="on" if open_ else "off", reason=reason))

    async def _lock_fault(self, exc: Exception) -> None:
        log.error("lock controller fault", extra={"door": self.cfg.door, "error": str(exc)})
        self.lock_faulted = True
        await self._alarm("lock_fault", "major", f"lock controller not answering: {exc}"[:1000])

    async def _lock_ok(self) -> None:
        """The controller answered: a lock fault raised earlier is over."""
        if self.lock_faulted:
            self.lock_faulted = False
            await self._clear("lock_fault", "lock controller answering again")

    async def open_door(self, reason: str) -> bool:
        """Release the lock for ``open_s``; False (door stays shut, alarm raised) if the controller fails."""
        if self.fire_mode:
            return True
        try:
            await self.io.pulse(self.cfg.lock, self.cfg.open_s)
        except DriverError as exc:
            await self._lock_fault(exc)
            return False
        await self._lock_ok()
        self.grant_until = time.monotonic() + self.cfg.open_s + 2.0
        await self._put(RelayState(relay=self.cfg.lock, state="on", reason=reason, pulse_s=self.cfg.open_s))
        return True

    # --- inputs: door contact, fire alarm, exit button --------------------------------------------------

    async def _watch_inputs(self) -> None:
        if self.cfg.fire and self.io.input(self.cfg.fire):
            await self._fire(True)
        while True:
            name, active = await self.io.changes.get()
            if name == self.cfg.fire:
                await self._fire(active)
            elif name == self.cfg.door_contact:
                await self._contact(active)
            elif name == self.cfg.exit_button and active:
                await self.open_door("exit_button")
                await self._decide("open", "exit_button", "manual")

    async def _fire(self, active: bool) -> None:
        if active == self.fire_mode:
            return
        self.fire_mode = active
        try:
            await self._lock(active, "fire_alarm" if active else "fire_alarm_cleared")
        except DriverError as exc:
            await self._lock_fault(exc)
        if active:
            await self._alarm("fire_mode", "critical", "fire alarm: door held open")
            await self._decide("open", "fire_alarm", "fire")
            await self._prompt("fire alarm: please leave the building")
        else:
            await self._clear("fire_mode", "fire alarm cleared: door locked again")

    async def _contact(self, is_open: bool) -> None:
        now = time.monotonic()
        if is_open:
            self.door_open_since = now
            if not self.fire_mode and now > self.grant_until:
                await self._alarm("door_forced", "critical", "door opened without a grant")
            elif not self.fire_mode:
                self._held_task = asyncio.create_task(self._held_watch(self.cfg.open_s + self.cfg.held_open_s))
        else:
            self.door_open_since = None
            if self._held_task:
                self._held_task.cancel()
                self._held_task = None
            if self._held_alarm:
                self._held_alarm = False
                await self._clear("door_held_open", "door closed")

    async def _held_watch(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self._held_alarm = True
        await self._alarm("door_held_open", "major", f"door open for more than {after_s:.0f} s (tailgating?)")

    # --- the camera -------------------------------------------------------------------------------------

    async def _fault(self, what: str, on: bool, message: str) -> None:
        """Raise or clear a standing fault alarm (camera, thermal camera, vision) once per change."""
        if on == (what in self._faults):
            return
        if on:
            self._faults.add(what)
            log.warning(what, extra={"door": self.cfg.door, "error": message})
            await self._alarm(what, "major", message[:1000])
        else:
            self._faults.discard(what)
            await self._clear(what, message)

    async def _open_camera_until_it_works(self) -> FrameSource:
        pause = 1.0
        while True:
            try:
                camera = await asyncio.to_thread(self._open_camera)
            except Exception as exc:  # a camera not answering, or a plug-in failing its own way: say so, try again
                await self._fault("camera_fault", True, f"camera cannot be opened: {exc}")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 60.0)
                continue
            return camera

    async def _watch_camera(self) -> None:
        if self.vision is None:
            return  # faces cannot be checked (vision_fault is raised): the door opens only by other means
        camera = self.camera = self.camera or await self._open_camera_until_it_works()
        assert self._ctx is not None
        for name, command in source_commands(camera).items():  # a simulated camera's sim-arrive
            self._ctx.register_command(name, command)
        no_thermal_since: float | None = None
        while True:
            try:
                frame = await camera.read()
            except Exception as exc:  # DriverError, or whatever a plug-in source raises: the loop goes on
                await self._fault("camera_fault", True, f"camera not delivering frames: {exc}")
                await asyncio.sleep(1.0)
                continue
            await self._fault("camera_fault", False, "camera delivering frames again")
            self.last_frame = frame
            self.camera_rate.tick()
            if frame.thermal:
                self.thermal_rate.tick()
                no_thermal_since = None
                await self._fault("thermal_fault", False, "thermal camera delivering frames again")
            elif self.cfg.vision.thermal is not None:
                no_thermal_since = no_thermal_since or time.monotonic()
                if time.monotonic() - no_thermal_since > THERMAL_SILENT_S:
                    why = getattr(camera, "error", None) or "no frames"
                    await self._fault("thermal_fault", True, f"thermal camera silent: {why}; temperatures not checked")
            try:
                d = await self.vision.adecide(frame.rgb, frame.thermal or None, frame.ambient_c, frame.ts)
            except Exception as exc:  # a frame the vision cannot take (an odd size, a decoder glitch): next frame
                log.exception("vision failed on a frame", extra={"door": self.cfg.door})
                await self._fault("vision_fault", True, f"face checks failing: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)
                continue
            await self._fault("vision_fault", False, "face checks working again")
            await self._act(d, frame)

    def _cooling(self, subject: str) -> bool:
        last = self._last.get(subject)
        return last is not None and time.monotonic() - last < self.cfg.cooldown_s

    async def _act(self, d: Decision, frame: Frame) -> None:
        if d.outcome == "no_face":
            return
        if d.outcome == "retry":
            await self._prompt(d.prompt)
            return
        subject = d.resident_id or f"face:{d.outcome}"
        if self._cooling(subject):
            return
        previous = self._last.get(subject)
        self._last[subject] = time.monotonic()
        self.outcomes[d.outcome] += 1
        if d.outcome == "spoof":
            await self._decide("deny", "spoof", "face", d)
            await self._alarm(
                "spoof",
                "major",
                f"presentation attack: {d.liveness.reason if d.liveness else 'spoof'}",
                presented=d.resident_id,
            )
        elif d.outcome == "fever":
            assert d.thermal is not None and d.thermal.temperature_c is not None and self.vision is not None
            assert self.vision.thermal is not None
            await self._decide("deny", "fever", "face", d)
            await self._put(
                TemperatureScreening(
                    door=self.cfg.door,
                    temperature_c=d.thermal.temperature_c,
                    threshold_c=self.vision.thermal.config.fever_c,
                    fever=True,
                    subject_id=d.resident_id,
                    ambient_c=d.thermal.features.t_amb if d.thermal.features else None,
                )
            )
            await self._alarm("fever", "major", f"body temperature {d.thermal.temperature_c:.1f} °C at the door")
        elif d.outcome == "match":
            assert d.resident_id is not None
            if (
                self.cfg.anti_passback_s is not None
                and previous is not None
                and time.monotonic() - previous < self.cfg.anti_passback_s
            ):
                await self._decide("deny", "anti_passback", "face", d)
                await self._prompt("already entered: please see the attendant")
                return
            if await self.open_door("resident_match"):
                await self._decide("open", "resident_match", "face", d)
            else:
                await self._decide("deny", "lock_fault", "face", d)
                await self._prompt("the door cannot open: please see the attendant")
                return
        else:  # unknown face: the visitor flow starts with a flat number
            self._visitor_until = time.monotonic() + self.cfg.visitor_entry_s
            self._visitor_frame = frame
        await self._prompt(d.prompt)

    # --- visitors ---------------------------------------------------------------------------------------

    async def keypad(self, keys: str) -> dict[str, Any]:
        """Keys typed at the terminal: ``*code#`` a visitor pass, ``1203#`` a flat number to call."""
        keys = keys.strip().rstrip("#")
        if keys.startswith("*"):
            at = self._ctx.trust.now_ms() if self._ctx is not None else None  # a clock turned back revives no pass
            grant = self.passes.use(keys[1:], at)
            if grant is None:
                await self._decide("deny", "pass_invalid", "visitor")
                await self._prompt("this code is not valid now")
                return {"result": "pass_invalid"}
            await self.open_door("visitor_pass")
            await self._decide("open", "visitor_pass", "visitor", subject=grant)
            await self._prompt("welcome")
            return {"result": "open", "pass": grant}
        if not keys.isalnum() or len(keys) > 16:
            await self._prompt("please enter the flat number")
            return {"result": "bad_input"}
        return await self.visitor_call(keys)

    async def visitor_call(self, unit: str) -> dict[str, Any]:
        assert self._ctx is not None
        if not self._ctx.online():
            await self._decide("deny", "cloud_unreachable", "visitor")
            await self._prompt("the resident cannot be reached right now: please call the flat or see the attendant")
            return {"result": "offline"}
        request_id = new_id()
        expires = now_ms() + int(self.cfg.visitor_answer_s * 1000)
        ref = await self._snapshot(request_id)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[request_id] = fut
        await self._put(
            VisitorRequest(request_id=request_id, door=self.cfg.door, unit=unit, snapshot_ref=ref, expires_ts=expires)
        )
        await self._decide("visitor", "visitor_waiting", "visitor")
        await self._prompt("calling flat {unit}…", unit=unit)
        try:
            async with asyncio.timeout(self.cfg.visitor_answer_s):
                answer = await fut
        except TimeoutError:
            await self._decide("deny", "visitor_no_answer", "visitor")
            await self._prompt("no answer from the flat")
            return {"result": "no_answer", "request_id": request_id}
        finally:
            self._answers.pop(request_id, None)
        if answer.get("approved"):
            ok = await self.open_door("visitor_approved")
            await self._decide(
                "open" if ok else "deny",
                "visitor_approved" if ok else "lock_fault",
                "visitor",
                subject=str(answer.get("by") or "") or None,
            )
            await self._prompt("welcome" if ok else "the door cannot open: please see the attendant")
            return {"result": "open" if ok else "lock_fault", "request_id": request_id}
        await self._decide("deny", "visitor_denied", "visitor", subject=str(answer.get("by") or "") or None)
        await self._prompt("the resident did not let you in")
        return {"result": "denied", "request_id": request_id}

    async def _snapshot(self, request_id: str) -> str | None:
        """The visitor's face as a small JPEG, sent only for this request (bulk lane)."""
        frame = self._visitor_frame
        if frame is None:
            return None
        ref = f"visitor-{request_id.lower()}"
        snap = jpeg_snapshot(frame.rgb, ref, "visitor_request", self.cfg.snapshot_max_bytes)
        if snap is None:
            return None
        await self._put(snap[0])
        self._visitor_frame = None  # not kept after it is sent
        return ref

    # --- commands ---------------------------------------------------------------------------------------

    async def _cmd_visitor_answer(self, args: dict[str, Any]) -> dict[str, Any]:
        rid = str(args.get("request_id", ""))
        fut = self._answers.get(rid)
        if fut is None or fut.done():
            return {"result": "no_such_request"}
        fut.set_result(args)
        return {"result": "delivered"}

    async def _cmd_visitor_pass(self, args: dict[str, Any]) -> dict[str, Any]:
        code = str(args.get("code", ""))
        if not code.isdigit() or not 4 <= len(code) <= 12:
            from edge.commands import CommandError

            raise CommandError("visitor-pass needs args.code: 4–12 digits, and valid_from_ms/valid_until_ms")
        self.passes.add(
            code,
            str(args.get("issued_by", "resident")),
            int(args.get("valid_from_ms", now_ms())),
            int(args.get("valid_until_ms", now_ms() + 86_400_000)),
            int(args.get("uses", 1)),
        )
        return {"stored": True}

    async def _cmd_keypad(self, args: dict[str, Any]) -> dict[str, Any]:
        task = asyncio.create_task(self.keypad(str(args.get("keys", ""))))  # a call may wait a minute
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"accepted": True}

    async def _cmd_open_door(self, args: dict[str, Any]) -> dict[str, Any]:
        ok = await self.open_door("remote")
        await self._decide(
            "open" if ok else "deny",
            "remote" if ok else "lock_fault",
            "remote",
            subject=str(args.get("by") or "") or None,
        )
        return {"opened": ok}

    def status(self) -> dict[str, Any]:
        recent = []
        for d, at in list(zip(self.decisions, self.decided_at, strict=False))[-10:]:
            # what and why, to the minute; not who, nor a person's temperature (health data on a local page)
            row = d.model_dump(include={"decision", "reason", "method", "score", "latency_ms"})
            recent.append({"at": time.strftime("%H:%M", time.localtime(at)), **row})
        return {
            "door": self.cfg.door,
            "door_open": self.door_open_since is not None,
            "fire_mode": self.fire_mode,
            "lock_fault": self.lock_faulted,
            "camera_fps": self.camera_rate.per_s(),
            "thermal_fps": self.thermal_rate.per_s(),
            "residents": len(self.gallery),
            "gallery_revision": self.gallery.revision,
            "decisions": recent,
        }

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "door": self.cfg.door,
            "fire_mode": self.fire_mode,
            "door_open": self.door_open_since is not None,
            "gallery_revision": self.gallery.revision,
            "residents": len(self.gallery),
            "passes": self.passes.count(),
        }

    async def _cmd_enroll(self, args: dict[str, Any]) -> dict[str, Any]:
        """An operator enrols the person now in front of the camera: the embedding is added here at once and
        sent to the cloud, which owns the gallery and passes it on to the site's other gates."""
        from edge.commands import CommandError
        from edge.vision.embed import align
        from edge.vision.quality import assess

        rid, unit = str(args.get("resident_id", "")), args.get("unit")
        if not rid:
            raise CommandError("enroll needs args.resident_id (and optionally args.unit)")
        frame, vision = self.last_frame, self.vision
        if frame is None or vision is None:
            raise CommandError("the camera has no frame yet; try again in a second")

        def embed() -> Any:
            faces = vision.detector.detect(frame.rgb)
            if not faces:
                raise CommandError("no face in view: ask the resident to look at the camera")
            face = vision.detector.refine(frame.rgb, faces[0])
            crop = align(frame.rgb, face)
            q = assess(face, crop, vision.config.quality)
            if not q.ok:
                raise CommandError(f"face not good enough ({q.issue}): {q.prompt}")
            return vision.embedder.embed_aligned(crop)

        emb = await asyncio.get_running_loop().run_in_executor(vision._executor, embed)
        existing = self.gallery.embeddings(rid)
        await asyncio.to_thread(self.gallery.enroll, rid, [*existing, emb], str(unit) if unit else None)
        await self._put(
            DeviceEvent(
                code="gallery.enrolled",
                message=f"{rid} enrolled at {self.cfg.door}",
                details={"resident_id": rid, "embedding_b64": base64.b64encode(emb.astype("<f4").tobytes()).decode()},
            )
        )
        return {"enrolled": rid, "embeddings": len(existing) + 1}

    # --- gallery sync -----------------------------------------------------------------------------------

    async def _sync_check(self) -> None:
        """Report the gallery revision periodically: a report lost in a broker restart (or a delta lost with
        it) is repaired within one period."""
        while True:
            await asyncio.sleep(self.cfg.sync_check_s)
            await self._announce_gallery()

    async def _announce_gallery(self) -> None:
        """Tell the cloud which revision this gate has, so it sends what is missing (or a full snapshot)."""
        assert self._ctx is not None
        have = self.gallery.revision
        await self._put(
            DeviceEvent(
                code="gallery.status",
                details={"door": self.cfg.door, "revision": have, **self._ctx.trust.sync_details(have)},
            )
        )

    async def _on_gallery(self, topic: Topic, payload: bytes) -> None:
        if self.closed:
            return
        assert self._ctx is not None
        have = self.gallery.revision
        try:
            env = decode(payload, topic)
            delta = env.body
            if not isinstance(delta, GalleryDelta):
                return  # vehicle allow-lists are for barriers
            if not self._ctx.trust.admit(delta, have):  # signed for this gate by the document key, and newer
                return  # already applied
        except ProtocolError as exc:
            await self._put(
                DeviceEvent(
                    code="gallery.rejected",
                    message=f"{exc.reason.value}: {exc.detail}"[:1000],
                    details={"reason": exc.reason.value, "door": self.cfg.door, "revision": have},
                )
            )
            return
        if delta.base_revision is not None and delta.base_revision != have:
            await self._put(
                DeviceEvent(
                    code="gallery.resync",
                    message=f"delta from {delta.base_revision} but this gate has {have}",
                    details={"door": self.cfg.door, "revision": have, **self._ctx.trust.sync_details(have)},
                )
            )
            return
        await asyncio.to_thread(self.gallery.apply_delta, delta)
        await self._put(
            DeviceEvent(
                code="gallery.applied",
                details={"door": self.cfg.door, "revision": delta.revision, "residents": len(self.gallery)},
            )
        )
