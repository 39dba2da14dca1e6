"""Batch writer: one transaction per batch; duplicates dropped by message id (unique constraint), bad input
dead-lettered with its reason. Used by every ingestion worker."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from cloud.db import schema as t
from cloud.events import (
    DomainEvent,
    FaceEnrolled,
    SyncReported,
)
from cloud.ingest.bulk import BulkWriter
from cloud.ingest.permits import refusal
from cloud.ingest.routes import LOG_BODIES, ROUTES
from cloud.ingest.routing import Context
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
    if type(exc).__module__.startswith("psycopg"):  # the driver's own error (COPY runs on its connection)
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and state:
            return state[:2] in _DATABASE_SQLSTATES
        import psycopg

        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError | MemoryError | ConnectionError)


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    received_ms: int


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
    #: what the batch's handlers did, as domain events: published on the node's stream after commit
    events: list[DomainEvent] = field(default_factory=list)
    dead_by_reason: dict[str, int] = field(default_factory=dict)

    def merge(self, other: BatchResult) -> None:
        """Add what ``other`` (a part of the same batch, committed on its own) did."""
        for name in ("stored", "duplicates", "dead", "ignored", "readings"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("points", "messages", "readings_rows", "events"):
            getattr(self, name).extend(getattr(other, name))
        for reason, n in other.dead_by_reason.items():
            self.dead_by_reason[reason] = self.dead_by_reason.get(reason, 0) + n

    # views of the events (what tests and tools read of a batch)

    @property
    def enrolments(self) -> list[tuple[str, str]]:
        """Faces enrolled at a gate by an operator: (resident id, embedding base64)."""
        return [(e.resident_id, e.embedding_b64) for e in self.events if isinstance(e, FaceEnrolled)]

    @property
    def sync_requests(self) -> list[tuple[str, str, str, int, str | None]]:
        """Gateways that reported their gallery / allow-list revision: (site, device, what, rev, nonce)."""
        return [
            (e.site, e.device, e.what, e.revision, e.nonce)
            for e in self.events
            if isinstance(e, SyncReported) and e.answer
        ]


@dataclass(frozen=True, slots=True)
class Decoded:
    """A batch after parsing and validation, before the database: what can be stored, what is refused."""

    received: int
    messages: list[tuple[Inbound, Topic, Envelope]]
    dead: list[dict[str, Any]]
    ignored: int


#: one message after parsing and validation: storable (inbound, topic, envelope), refused (its dead-letter row),
#: or None (not for ingestion: cloud → device traffic seen on a wildcard)
Part = tuple[Inbound, Topic, Envelope] | dict[str, Any] | None


def decode_one(item: Inbound) -> Part:
    """Parse the topic and validate the payload of one message (no database)."""
    try:
        top = parse(item.topic)
    except ProtocolError as exc:
        return dead_letter(item, exc.reason, exc.detail)
    if top.channel not in UPLINK:
        return None
    try:
        return (item, top, decode(item.payload, top))
    except ProtocolError as exc:
        return dead_letter(item, exc.reason, exc.detail, top.device)
    except Exception as exc:  # the decoder met something no one foresaw: still a refusal, not a stall
        return dead_letter(item, Reason.SCHEMA, f"{type(exc).__name__}: {exc}", top.device)


def gather(parts: list[Part]) -> Decoded:
    """A batch from its messages' parts, in the order received."""
    decoded: list[tuple[Inbound, Topic, Envelope]] = []
    dead: list[dict[str, Any]] = []
    ignored = 0
    for part in parts:
        if part is None:
            ignored += 1
        elif isinstance(part, dict):
            dead.append(part)
        else:
            decoded.append(part)
    return Decoded(len(parts), decoded, dead, ignored)


def decode_batch(items: list[Inbound]) -> Decoded:
    """Parse each topic and validate each payload (no database)."""
    return gather([decode_one(item) for item in items])


class Store:
    """Writes decoded batches. Thread-safe for use by several workers in one process."""

    def __init__(self, engine: Engine, metrics: Metrics | None = None, auto_register: bool = False) -> None:
        self.engine = engine
        #: collect time-series points for an exporter (set by the service when one is configured)
        self.collect_points = False
        #: collect new messages for the rules engine (set by the service when rules are loaded)
        self.collect_messages = False
        self.kinds: dict[str, str] = {}  # device id → kind, for rule matching
        self._bulk = BulkWriter(engine.dialect.name)  # a batch's rows, one statement each
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
        """Store what is valid, dead-letter the rest with its reason; return what happened (both steps below)."""
        return self.write_decoded(decode_batch(items))

    def write_decoded(self, batch: Decoded) -> BatchResult:
        """Store a decoded batch: one transaction for its messages and dead letters.

        A message that passes validation and still fails while being stored (a value the database refuses, a
        bug) is dead-lettered ``store_error`` and the rest of its batch is committed: the batch is split in
        halves until the failing message stands alone. Only a failure of the database itself (connection lost,
        server gone, disk full; :func:`database_failure`) propagates, so the caller retries the whole batch.
        Writes nothing into ``batch``: a batch retried after a database failure is written as it was.
        """
        res = BatchResult(ignored=batch.ignored)
        if batch.messages or batch.dead:
            self._write(batch.messages, list(batch.dead), res)
        mt = self.metrics
        mt.inc("ce_ingest_messages_total", batch.received, "messages taken from the broker")
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
            keep = LOG_BODIES.get(type(env.body))
            body: dict[str, Any] = keep(env.body) if keep else env.body.model_dump(mode="json", exclude_none=True)
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
        new_ids = self._bulk.messages(conn, rows)
        res.stored = len(new_ids)
        res.duplicates = len(ok) - len(new_ids)
        readings: list[tuple[str, str, int, float, str | None, str]] = []
        last_seen: dict[str, int] = {}
        for item, top, env in ok:
            last_seen[top.device] = max(last_seen.get(top.device, 0), item.received_ms)
            if env.id not in new_ids:
                continue
            new_ids.discard(env.id)  # the same id twice in one batch is stored once
            ctx = Context(conn, top.site, top.device, env, item.received_ms, self._insert, readings, res.events)
            for handle in ROUTES.get(type(env.body), ()):
                handle(ctx, env.body)
            if self.collect_messages and not isinstance(env.body, m.TelemetryBatch):
                res.messages.append((top.site, top.device, env.type, bodies[env.id], item.received_ms))
        if readings:
            self._bulk.readings(conn, readings)
            res.readings = len(readings)
            if self.collect_points:
                sites = {top.device: top.site for _i, top, _e in ok}
                res.points.extend((sites[r[0]], r[0], r[1], r[3], r[2]) for r in readings)
        res.readings_rows = readings
        self._bulk.touch(conn, sorted(last_seen.items()))
