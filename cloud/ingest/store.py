"""Batch writer: one transaction per batch; duplicates dropped by message id (unique constraint), bad input
dead-lettered with its reason. Used by every ingestion worker."""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from cloud import events
from cloud.alarms import clear_alarm, raise_alarm
from cloud.db import schema as t
from cloud.db import schema_gate as g
from cloud.ingest.permits import refusal
from cloud.metrics import Metrics
from protocol import messages as m
from protocol.codec import decode
from protocol.envelope import Envelope
from protocol.errors import ProtocolError, Reason, SignatureError
from protocol.limits import text_problem
from protocol.signing import load_public_key, signs, verify_uplink
from protocol.topics import UPLINK, Topic, parse

log = logging.getLogger("civicedge.cloud.ingest")
MAX_DEAD_PAYLOAD = 64 * 1024
#: how long a worker trusts its cached view of the device registry (site, kind, revoked)
REGISTRY_CACHE_S = 30.0
_HEALTH_METRICS = ("uptime_s", "cpu_load", "mem_rss_bytes", "disk_free_bytes", "outbox_bytes", "battery_v", "rssi_dbm")
_MANHOLE_METRICS = ("tilt_deg", "battery_v", "water_level_cm", "gas_lel", "temperature_c", "rssi_dbm")


_NONCE = re.compile(m.SYNC_NONCE_PATTERN)
_SYNC_EVENTS = {
    "gallery.status": "gallery",
    "gallery.resync": "gallery",
    "allowlist.status": "allowlist",
    "allowlist.resync": "allowlist",
    "gallery.applied": "gallery",  # recorded, not answered
    "allowlist.applied": "allowlist",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with control characters and lone surrogates replaced (a dead
    letter's topic and detail quote what a device sent, and every database must store them)."""
    out = text[:limit]
    if text_problem(out) is None:
        return out
    return "".join("\ufffd" if text_problem(ch) is not None else ch for ch in out)


def _public_key(device_id: str, b64: str | None) -> Ed25519PublicKey | None:
    """A registered device key; a broken row refuses what the device signs rather than accepting everything."""
    try:
        return load_public_key(b64) if b64 else None
    except ValueError:  # the API checks keys: only a hand-edited row gets here
        log.error("unusable signing key in the registry", extra={"device": device_id})
        return Ed25519PublicKey.from_public_bytes(bytes(32))


def _signature_refusal(
    key: Ed25519PublicKey | None, device: str, env: Envelope, enrolment: bool
) -> SignatureError | None:
    """``env`` against the device's key: a keyless device is heard (but for faces), a keyed one must have signed."""
    if key is None:
        if not enrolment:
            return None
        return SignatureError(
            Reason.UNSIGNED,
            f"a face is taken only from a gateway that signs what it says: {device!r} has no signing key registered "
            "(provision it with tools/flash.py gateway-bundle)",
        )
    try:
        verify_uplink(key, env)
    except SignatureError as exc:
        return exc
    return None


def dead_letter(item: Inbound, reason: Reason, detail: str, device: str | None = None) -> dict[str, Any]:
    """The dead-letter row for ``item``: the payload kept (cut at 64 KiB) with why it was refused."""
    return {
        "received_ms": item.received_ms,
        "topic": printable(item.topic, 300),
        "reason": reason.value,
        "detail": printable(detail, 2000),
        "device_id": device,
        "payload": item.payload[:MAX_DEAD_PAYLOAD],
        "size": len(item.payload),
    }


#: SQLSTATE classes that mean the database, not the message, failed: connection (08), transaction rollback
#: (40: serialization, deadlock), insufficient resources (53: disk full, out of memory), operator intervention
#: (57: shutdown), system error (58: I/O)
_DATABASE_SQLSTATES = frozenset({"08", "40", "53", "57", "58"})


def database_failure(exc: BaseException) -> bool:
    """True when ``exc`` is the database failing (retry the batch later), False when a message made it fail
    (dead-letter the message). Decided by the exception's class and, on PostgreSQL, its SQLSTATE."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        state = getattr(exc.orig, "sqlstate", None)
        if isinstance(state, str) and state:
            return state[:2] in _DATABASE_SQLSTATES
        # SQLite (no SQLSTATE): locked, busy, disk I/O, disk full and a missing file are all OperationalError
        return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    return isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError | MemoryError | ConnectionError)


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    received_ms: int


#: details of a gate's enrolment event that are face data: never kept in the message log
FACE_DATA = frozenset({"embedding_b64", "thumbnail_b64"})


@dataclass(slots=True)
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    ignored: int = 0
    readings: int = 0
    points: list[tuple[str, str, str, float, int]] = field(default_factory=list)  # site, device, metric, v, ts
    #: new messages for the rules engine: (site, device, type, body, received_ms), when collect_messages is on
    messages: list[tuple[str, str, str, dict[str, Any], int]] = field(default_factory=list)
    readings_rows: list[tuple[str, str, int, float, str | None, str]] = field(default_factory=list)
    #: gateways that reported their gallery / allow-list revision: (site, device, "gallery"|"allowlist", rev)
    sync_requests: list[tuple[str, str, str, int, str | None]] = field(default_factory=list)
    #: faces enrolled at a gate by an operator: (resident id, embedding base64)
    enrolments: list[tuple[str, str]] = field(default_factory=list)
    #: command acknowledgements: (device, cid, status) (credential rotations wait for them)
    acks: list[tuple[str, str, str]] = field(default_factory=list)
    #: update progress: (device, rollout, state, reason, detail)
    updates: list[tuple[str, str, str, str | None, str]] = field(default_factory=list)
    #: what the consoles' live channel shows (alarms, device status, gate decisions, visitor requests)
    live: list[dict[str, Any]] = field(default_factory=list)
    dead_by_reason: dict[str, int] = field(default_factory=dict)

    def merge(self, other: BatchResult) -> None:
        """Add what ``other`` (a part of the same batch, committed on its own) did."""
        for name in ("stored", "duplicates", "dead", "ignored", "readings"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("points", "messages", "readings_rows", "sync_requests", "enrolments", "acks", "updates", "live"):
            getattr(self, name).extend(getattr(other, name))
        for reason, n in other.dead_by_reason.items():
            self.dead_by_reason[reason] = self.dead_by_reason.get(reason, 0) + n


class Store:
    """Writes decoded batches. Thread-safe for use by several workers in one process."""

    def __init__(self, engine: Engine, metrics: Metrics | None = None, auto_register: bool = False) -> None:
        self.engine = engine
        #: collect time-series points for an exporter (set by the service when one is configured)
        self.collect_points = False
        #: collect new messages for the rules engine (set by the service when rules are loaded)
        self.collect_messages = False
        self.kinds: dict[str, str] = {}  # device id → kind, for rule matching
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        # readings go straight to the driver's executemany: building SQLAlchemy parameters for each of tens of
        # thousands of rows per second costs more than the insert itself
        self._telemetry_sql = (
            f"INSERT INTO telemetry (device_id, metric, ts, value, unit, msg_id) VALUES ({', '.join([mark] * 6)})"
        )
        self.metrics = metrics or Metrics()
        self.auto_register = auto_register
        self.sites: dict[str, str] = {}  # device id → site id (known devices)
        self.revoked: set[str] = set()  # devices whose identity was revoked: everything they send is refused
        self.signing_keys: dict[str, Ed25519PublicKey | None] = {}  # each known device's own key (None: it has none)
        self._lock = threading.Lock()
        self._cached_at = time.monotonic()
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    # --- device registry cache ---------------------------------------------------------------------

    def _known(self, conn: Any, ids: set[str]) -> dict[str, tuple[str, Ed25519PublicKey | None]]:
        """Each registered device among ``ids``: its site and its own key (None: it has none). One snapshot per
        batch, taken with the rows just read: another thread clearing or refreshing the cache meanwhile cannot
        make a keyed gateway look keyless (or a registered device unknown) for this batch."""
        with self._lock:
            if time.monotonic() - self._cached_at > REGISTRY_CACHE_S:
                # re-read now and then: another node (or the API on another process) may have revoked or moved one
                self.sites.clear()
                self.kinds.clear()
                self.revoked.clear()
                self.signing_keys.clear()
                self._cached_at = time.monotonic()
            known = {i: (self.sites[i], self.signing_keys[i]) for i in ids if i in self.sites}
        missing = ids - known.keys()
        if missing:
            d = t.devices.c
            rows = list(conn.execute(select(d.id, d.site_id, d.kind, d.status, d.signing_key).where(d.id.in_(missing))))
            fresh = {r.id: (r.site_id, _public_key(r.id, r.signing_key)) for r in rows}
            with self._lock:
                self.sites.update({r.id: r.site_id for r in rows})
                self.kinds.update({r.id: r.kind for r in rows})
                self.revoked.update(r.id for r in rows if r.status == "revoked")
                self.signing_keys.update({i: key for i, (_site, key) in fresh.items()})
            known.update(fresh)
        return known

    def forget_device(self, device_id: str) -> None:
        """Read this device from the registry again at its next message (it was revoked, moved or re-keyed)."""
        with self._lock:
            self.sites.pop(device_id, None)
            self.kinds.pop(device_id, None)
            self.revoked.discard(device_id)
            self.signing_keys.pop(device_id, None)

    def forget_all(self) -> None:
        """Read every device again: changes may have been missed (the cross-node channel reconnected)."""
        with self._lock:
            self._cached_at = -REGISTRY_CACHE_S

    def _signature_problem(
        self, conn: Any, device: str, env: Envelope, key: Ed25519PublicKey | None
    ) -> SignatureError | None:
        """Why ``env`` cannot be taken as the device's own word; None: it can. A device whose key the registry
        holds (``key``, from this batch's snapshot) signs every message but readings; a face is taken only from a
        device that signs. Before refusing, and when a keyless device sends a signature, the key is read again:
        another node (or the API) may have registered a new one since it was cached."""
        if not signs(env.body):
            return None
        enrolment = isinstance(env.body, m.DeviceEvent) and env.body.code == "gallery.enrolled"
        if key is None and not enrolment and not env.sig:
            return None  # a device without a key of its own (a board): its word, as before
        if key is not None and _signature_refusal(key, device, env, enrolment) is None:
            return None
        row = conn.execute(select(t.devices.c.signing_key).where(t.devices.c.id == device)).first()
        key = _public_key(device, row.signing_key if row is not None else None)
        with self._lock:
            self.signing_keys[device] = key
        return _signature_refusal(key, device, env, enrolment)

    # --- the batch ---------------------------------------------------------------------------------

    def write_batch(self, items: list[Inbound]) -> BatchResult:
        """Store what is valid, dead-letter the rest with its reason; return what happened.

        A message that passes validation and still fails while being stored (a value the database refuses, a
        bug) is dead-lettered ``store_error`` and the rest of its batch is committed: the batch is split in
        halves until the failing message stands alone. Only a failure of the database itself (connection lost,
        server gone, disk full; :func:`database_failure`) propagates, so the caller retries the whole batch.
        """
        res = BatchResult()
        decoded: list[tuple[Inbound, Topic, Envelope]] = []
        dead: list[dict[str, Any]] = []
        for item in items:
            try:
                top = parse(item.topic)
            except ProtocolError as exc:
                dead.append(dead_letter(item, exc.reason, exc.detail))
                continue
            if top.channel not in UPLINK:
                res.ignored += 1  # cloud → device traffic seen on the wildcard
                continue
            try:
                env = decode(item.payload, top)
            except ProtocolError as exc:
                dead.append(dead_letter(item, exc.reason, exc.detail, top.device))
                continue
            except Exception as exc:  # the decoder met something no one foresaw: still a refusal, not a stall
                dead.append(dead_letter(item, Reason.SCHEMA, f"{type(exc).__name__}: {exc}", top.device))
                continue
            decoded.append((item, top, env))
        if decoded or dead:
            self._write(decoded, dead, res)
        mt = self.metrics
        mt.inc("ce_ingest_messages_total", len(items), "messages taken from the broker")
        mt.inc("ce_ingest_stored_total", res.stored, "messages stored (new)")
        mt.inc("ce_ingest_duplicates_total", res.duplicates, "duplicate messages dropped by id")
        mt.inc("ce_ingest_readings_total", res.readings, "telemetry readings stored")
        mt.inc("ce_ingest_ignored_total", res.ignored, "messages on cloud → device channels, not for ingestion")
        for reason, n in res.dead_by_reason.items():
            mt.inc("ce_dead_letters_total", n, "messages dead-lettered", reason=reason)
        return res

    def _write(
        self, group: list[tuple[Inbound, Topic, Envelope]], dead: list[dict[str, Any]], res: BatchResult
    ) -> None:
        """One transaction for ``group`` and the dead letters found so far; on a message's own failure, each
        half again (and a message failing alone is dead-lettered)."""
        try:
            res.merge(self._attempt(group, dead))
            return
        except Exception as exc:
            if database_failure(exc):
                raise
            failure = exc
        if dead:  # what was refused before the failure is still refused
            res.merge(self._attempt([], dead))
        if len(group) == 1:
            item, top, _env = group[0]
            log.warning(
                "message failed while being stored; dead-lettered",
                extra={"device": top.device, "error": f"{type(failure).__name__}: {failure}"[:300]},
            )
            detail = f"{type(failure).__name__}: {failure}"
            res.merge(self._attempt([], [dead_letter(item, Reason.STORE_ERROR, detail, top.device)]))
            return
        half = len(group) // 2
        self._write(group[:half], [], res)
        self._write(group[half:], [], res)

    def _attempt(self, group: list[tuple[Inbound, Topic, Envelope]], dead: list[dict[str, Any]]) -> BatchResult:
        res = BatchResult()
        dead = list(dead)
        with self.engine.begin() as conn:
            if group:
                ok = self._admit(conn, group, dead)
                if ok:
                    self._store(conn, ok, res)
            if dead:
                conn.execute(t.dead_letters.insert(), dead)
        for d in dead:
            res.dead += 1
            res.dead_by_reason[d["reason"]] = res.dead_by_reason.get(d["reason"], 0) + 1
        return res

    def _admit(
        self, conn: Any, group: list[tuple[Inbound, Topic, Envelope]], dead: list[dict[str, Any]]
    ) -> list[tuple[Inbound, Topic, Envelope]]:
        """The messages whose device is registered at the topic's site, not revoked, and which touch only what
        is the device's own (:mod:`cloud.ingest.permits`); the others go to ``dead``."""
        known = self._known(conn, {top.device for _i, top, _e in group})
        ok: list[tuple[Inbound, Topic, Envelope]] = []
        for item, top, env in group:
            site, key = known.get(top.device, (None, None))
            if site is None and self.auto_register:
                self._register(conn, top)
                site = top.site
                known[top.device] = (site, None)
            if top.device in self.revoked:
                dead.append(dead_letter(item, Reason.REVOKED_DEVICE, f"device {top.device!r} was revoked", top.device))
            elif site is None:
                detail = f"device {top.device!r} is not registered"
                dead.append(dead_letter(item, Reason.UNKNOWN_DEVICE, detail, top.device))
            elif site != top.site:
                detail = f"device {top.device!r} belongs to site {site!r}, not {top.site!r}"
                dead.append(dead_letter(item, Reason.SPOOFED_DEVICE, detail, top.device))
            elif (bad := self._signature_problem(conn, top.device, env, key)) is not None:
                dead.append(dead_letter(item, bad.reason, bad.detail, top.device))
            elif (why := refusal(conn, site, env)) is not None:
                dead.append(dead_letter(item, Reason.NOT_PERMITTED, why, top.device))
            else:
                ok.append((item, top, env))
        return ok

    def _register(self, conn: Any, top: Topic) -> None:
        ins = self._insert
        conn.execute(ins(t.sites).values(id=top.site, name=top.site, created_ms=now_ms()).on_conflict_do_nothing())
        conn.execute(
            ins(t.devices)
            .values(
                id=top.device, site_id=top.site, kind="gateway", name=top.device, status="unknown", created_ms=now_ms()
            )
            .on_conflict_do_nothing()
        )

    def _store(self, conn: Any, ok: list[tuple[Inbound, Topic, Envelope]], res: BatchResult) -> None:
        rows: list[dict[str, Any]] = []
        bodies: dict[str, dict[str, Any]] = {}
        for item, top, env in ok:
            if isinstance(env.body, m.TelemetryBatch):
                body: dict[str, Any] = {"readings": len(env.body.readings)}  # the readings go to telemetry
            elif isinstance(env.body, m.MediaSnapshot):  # the image goes to the media table
                body = env.body.model_dump(mode="json", exclude={"data_b64"})
            elif isinstance(env.body, m.DeviceEvent) and env.body.code == "gallery.enrolled":
                # the embedding is face data: it is kept only encrypted, with the resident (cloud.gate.vault)
                body = env.body.model_dump(mode="json", exclude_none=True)
                body["details"] = {k: v for k, v in body["details"].items() if k not in FACE_DATA}
            else:
                body = env.body.model_dump(mode="json", exclude_none=True)
            bodies[env.id] = body
            rows.append(
                {
                    "msg_id": env.id,
                    "site_id": top.site,
                    "device_id": top.device,
                    "type": env.type,
                    "channel": top.channel.value,
                    "seq": env.seq,
                    "device_ts": env.ts,
                    "received_ms": item.received_ms,
                    "body": body,
                }
            )
        stmt = self._insert(t.messages).on_conflict_do_nothing(index_elements=["msg_id"]).returning(t.messages.c.msg_id)
        new_ids = {r[0] for r in conn.execute(stmt, rows)}
        res.stored = len(new_ids)
        res.duplicates = len(ok) - len(new_ids)
        readings: list[tuple[str, str, int, float, str | None, str]] = []
        last_seen: dict[str, int] = {}
        for item, top, env in ok:
            last_seen[top.device] = max(last_seen.get(top.device, 0), item.received_ms)
            if env.id not in new_ids:
                continue
            new_ids.discard(env.id)  # the same id twice in one batch is stored once
            self._apply(conn, top, env, item, readings, res)
            if self.collect_messages and not isinstance(env.body, m.TelemetryBatch):
                res.messages.append((top.site, top.device, env.type, bodies[env.id], item.received_ms))
        if readings:
            conn.exec_driver_sql(self._telemetry_sql, readings)
            res.readings = len(readings)
            if self.collect_points:
                sites = {top.device: top.site for _i, top, _e in ok}
                res.points.extend((sites[r[0]], r[0], r[1], r[3], r[2]) for r in readings)
        res.readings_rows = readings
        for dev, seen in last_seen.items():
            conn.execute(
                update(t.devices)
                .where(t.devices.c.id == dev)
                .where((t.devices.c.last_seen_ms.is_(None)) | (t.devices.c.last_seen_ms < seen))
                .values(last_seen_ms=seen)
            )

    def _apply(
        self,
        conn: Any,
        top: Topic,
        env: Envelope,
        item: Inbound,
        readings: list[tuple[str, str, int, float, str | None, str]],
        res: BatchResult,
    ) -> None:
        b = env.body
        dev = top.device

        def raise_(key: str, code: str, severity: str, message: str, details: dict[str, Any]) -> None:
            alarm_id = raise_alarm(
                conn,
                device=dev,
                key=key,
                code=code,
                severity=severity,
                message=message,
                details=details,
                at=item.received_ms,
                msg_id=env.id,
                by="device",
            )
            res.live.append(
                events.alarm_raised(
                    alarm_id,
                    device=dev,
                    site=top.site,
                    code=code,
                    severity=severity,
                    message=message,
                    at_ms=item.received_ms,
                )
            )

        def clear(key: str) -> None:
            for alarm_id in clear_alarm(conn, device=dev, key=key, at=item.received_ms, by="device"):
                res.live.append(events.alarm_cleared(alarm_id, device=dev, at_ms=item.received_ms))

        def reading(metric: str, value: float, ts: int, unit: str | None = None) -> None:
            readings.append((dev, metric, ts, float(value), unit, env.id))

        if isinstance(b, m.TelemetryBatch):
            mid = env.id
            readings.extend([(dev, r.metric, r.ts, r.value, r.unit, mid) for r in b.readings])
        elif isinstance(b, m.Health):
            for name in _HEALTH_METRICS:
                v = getattr(b, name)
                if v is not None:
                    reading(name, v, env.ts)
            for lane, depth in b.outbox_depth.items():
                reading(f"outbox_{lane}", depth, env.ts)
            conn.execute(
                update(t.devices)
                .where(t.devices.c.id == dev)
                .values(
                    health=b.model_dump(mode="json", exclude_none=True),
                    health_ms=item.received_ms,
                    agent_version=b.agent_version,
                )
            )
        elif isinstance(b, m.ManholeReading):
            for name in _MANHOLE_METRICS:
                v = getattr(b, name)
                if v is not None:
                    reading(name, v, env.ts)
        elif isinstance(b, m.DeviceState):
            vals: dict[str, Any] = {"status": b.status}
            if b.agent_version:
                vals["agent_version"] = b.agent_version
            # a revoked device stays revoked whatever it (or its last will) says: only an admin reinstates it
            devs = t.devices.c
            conn.execute(update(t.devices).where(devs.id == dev, devs.status != "revoked").values(**vals))
            res.live.append({"kind": "device", "device_id": dev, "site_id": top.site, "status": b.status})
        elif isinstance(b, m.AlarmRaise):
            raise_(b.key, b.code, b.severity, b.message, b.details)
        elif isinstance(b, m.AlarmClear):
            clear(b.key)
        elif isinstance(b, m.ManholeAlarm):
            key = f"manhole.{b.kind}"
            if b.active:
                sev = "critical" if b.kind in ("gas", "overturn", "flood") else "major"
                raise_(
                    key,
                    b.kind,
                    sev,
                    f"{b.kind}: {b.value:g} (threshold {b.threshold:g})",
                    {"value": b.value, "threshold": b.threshold},
                )
            else:
                clear(key)
        elif isinstance(b, m.ElevatorFault):
            key = f"elevator.{b.car}.{b.code}"
            if b.active:
                raise_(
                    key,
                    b.code,
                    b.severity,
                    b.description or b.code,
                    {"car": b.car, "entrapment": b.entrapment, "floor": b.floor},
                )
            else:
                clear(key)
        elif isinstance(b, m.CommandAck):
            res.acks.append((dev, b.cid, b.status))
            conn.execute(
                update(t.commands)
                .where(t.commands.c.cid == b.cid)
                .where(t.commands.c.device_id == dev)
                .values(status=b.status, reason=b.reason, result=b.result, acked_ms=item.received_ms)
            )
        elif isinstance(b, m.GateDecision):
            res.live.append(
                {
                    "kind": "gate",
                    "device_id": dev,
                    "site_id": top.site,
                    "decision": b.decision,
                    "reason": b.reason,
                    "temperature_c": b.temperature_c,
                    "at_ms": item.received_ms,
                }
            )
        elif isinstance(b, m.UpdateStatus):
            res.updates.append((dev, b.rollout, b.state, b.reason, b.detail))
        elif isinstance(b, m.VisitorRequest):
            res.live.append({"kind": "visitor", "device_id": dev, "site_id": top.site, "unit": b.unit})
            conn.execute(
                self._insert(g.visitor_requests)
                .values(
                    request_id=b.request_id,
                    site_id=top.site,
                    device_id=dev,
                    door=b.door,
                    unit=b.unit,
                    snapshot_ref=b.snapshot_ref,
                    status="pending",
                    created_ms=item.received_ms,
                    expires_ms=b.expires_ts,
                )
                .on_conflict_do_nothing(index_elements=["request_id"])
            )
        elif isinstance(b, m.MediaSnapshot):
            conn.execute(
                self._insert(g.media)
                .values(
                    ref=b.ref,
                    device_id=dev,
                    content_type=b.content_type,
                    purpose=b.purpose,
                    data=b.data,
                    received_ms=item.received_ms,
                    note="",
                )
                .on_conflict_do_nothing(index_elements=["device_id", "ref"])
            )
        elif isinstance(b, m.DeviceEvent) and b.code == "gallery.enrolled":
            rid, emb = b.details.get("resident_id"), b.details.get("embedding_b64")
            if isinstance(rid, str) and isinstance(emb, str):
                res.enrolments.append((rid, emb))
        elif isinstance(b, m.DeviceEvent) and b.code in _SYNC_EVENTS:
            rev = b.details.get("revision")
            if type(rev) is int:  # not a bool (which Python counts as an int and no database stores as one)
                what = _SYNC_EVENTS[b.code]
                nonce = b.details.get("nonce")
                nonce = nonce if isinstance(nonce, str) and _NONCE.fullmatch(nonce) else None
                self._synced(conn, top.site, dev, what, rev, item.received_ms, nonce)
                if not b.code.endswith(".applied"):
                    res.sync_requests.append((top.site, dev, what, rev, nonce))

    def _synced(self, conn: Any, site: str, dev: str, what: str, rev: int, at: int, nonce: str | None) -> None:
        """Remember the revision a gate or barrier has (the console shows who still holds erased faces), and the
        nonce it asked with while its copy is empty (what is sent to it carries it back)."""
        vals = {"revision": rev, "updated_ms": at, "site_id": site, "nonce": nonce}
        ins = self._insert(g.gate_sync).values(device_id=dev, what=what, **vals)
        conn.execute(ins.on_conflict_do_update(index_elements=["device_id", "what"], set_=vals))
