"""Residents, their face embeddings and vehicles; visitor requests; keeping every gateway's copy current.

The cloud owns the data; gateways hold copies and decide alone. Every change appends to a per-site log, and a
gateway that reports its revision (on each connect, or when a delta does not fit) gets exactly what it is
missing — or a full snapshot when the log no longer reaches back that far.

Wire revisions are log revisions × 1000. A full snapshot larger than one message is sent as a chain whose
parts carry R×1000 − (n − i): a gateway that stops part-way reports a revision that is not a multiple of 1000
and gets the whole snapshot again, so a partial copy is never mistaken for a consistent one.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, func, select, update

from cloud.commands import CommandPublisher
from cloud.db import schema as t
from cloud.gate import tables as g
from cloud.gate.ingest import FACE_DATA
from cloud.gate.vault import FaceVault
from cloud.ingest.store import now_ms
from protocol.limits import EMBEDDING_DIM
from protocol.messages import BODIES, AllowlistDelta, GalleryDelta, GalleryEntry, PlateEntry
from protocol.plates import normalize

log = logging.getLogger("civicedge.cloud.gate")
STEP = 1000
PART = 300  # entries per message (≈ 210 KB of base64 embeddings, under the payload limit)
LOG_KEEP = 20_000  # log rows kept per site; older gateways get a full snapshot


#: message types whose ``subject_id`` names a person (scrubbed on erasure, deleted with the gate log)
SUBJECT_LOGS = tuple(b.TYPE for b in BODIES if "subject_id" in b.model_fields)


class GateError(ValueError):
    """A request the data does not allow (unknown resident, bad plate, answered request, …)."""


class GateService:
    def __init__(self, engine: Engine, publisher: Callable[[], CommandPublisher | None], vault: FaceVault) -> None:
        self.engine = engine
        self._publisher = publisher
        self.vault = vault  # embeddings are stored sealed
        self.stopping = threading.Event()  # set on shutdown: a sync waiting for the broker gives up
        # sync requests not yet answered, one per (site, device, what): a gateway repeating itself (or a hostile
        # one asking for the whole gallery a thousand times) costs one answer
        self._wanted: dict[tuple[str, str, str], tuple[int, str | None]] = {}
        self._wanted_lock = threading.Lock()

    # --- residents and faces ---------------------------------------------------------------------------

    def add_resident(
        self, site_id: str, resident_id: str, unit: str | None, name: str, consent: bool = False, by: str = "system"
    ) -> dict[str, Any]:
        """A resident; ``consent`` records their consent to face recognition now (faces are refused
        without it)."""
        with self.engine.begin() as conn:
            if conn.execute(select(t.sites.c.id).where(t.sites.c.id == site_id)).first() is None:
                raise LookupError(f"site {site_id}")
            if conn.execute(select(g.residents.c.id).where(g.residents.c.id == resident_id)).first():
                raise GateError(f"resident {resident_id} exists")
            at = now_ms()
            conn.execute(
                g.residents.insert().values(
                    id=resident_id,
                    site_id=site_id,
                    unit=unit,
                    name=name,
                    created_ms=at,
                    consent_ms=at if consent else None,
                    consent_by=by if consent else None,
                )
            )
        return {"id": resident_id, "site_id": site_id, "unit": unit, "name": name, "faces": 0, "consent": consent}

    def record_consent(self, resident_id: str, by: str) -> dict[str, Any]:
        with self.engine.begin() as conn:
            self._resident_site(conn, resident_id)
            conn.execute(
                update(g.residents).where(g.residents.c.id == resident_id).values(consent_ms=now_ms(), consent_by=by)
            )
        return {"id": resident_id, "consent": True}

    def add_faces(self, resident_id: str, embeddings: list[np.ndarray]) -> dict[str, Any]:
        with self.engine.begin() as conn:
            site = self._resident_site(conn, resident_id, lock=True)
            consent = conn.execute(select(g.residents.c.consent_ms).where(g.residents.c.id == resident_id)).scalar()
            if consent is None:
                raise GateError(
                    f"no consent to face recognition is recorded for resident {resident_id}: record it first "
                    "(POST /api/residents/{id}/consent, or consent: true when adding the resident)"
                )
            for e in embeddings:
                v = np.asarray(e, dtype=np.float32).reshape(-1)
                if v.size != EMBEDDING_DIM or not np.isfinite(v).all():
                    raise GateError(f"an embedding has {EMBEDDING_DIM} finite values")
                v = v / max(float(np.linalg.norm(v)), 1e-12)
                sealed = self.vault.seal(v.astype("<f4").tobytes(), resident_id)
                conn.execute(
                    g.resident_faces.insert().values(resident_id=resident_id, embedding=sealed, created_ms=now_ms())
                )
            rev = self._log(conn, g.gallery_log, site, resident_id=resident_id, op="upsert")
            faces = conn.execute(
                select(func.count()).select_from(g.resident_faces).where(g.resident_faces.c.resident_id == resident_id)
            ).scalar_one()
        self.push(site, "gallery")
        return {"id": resident_id, "faces": int(faces), "revision": rev * STEP}

    def remove_resident(self, resident_id: str, by: str = "system") -> dict[str, Any]:
        """Delete the resident and erase their face data everywhere (see :meth:`_erase`)."""
        return self._erase(resident_id, by, "deleted")

    def withdraw_consent(self, resident_id: str, by: str = "system") -> dict[str, Any]:
        """The resident keeps their record (plates, visitors) but their faces are erased everywhere."""
        return self._erase(resident_id, by, "withdrawn")

    def _erase(self, resident_id: str, by: str, reason: str) -> dict[str, Any]:
        """Faces deleted here, a delete sent to every gate of the site (each acknowledges by reporting the
        revision; :meth:`erasures` shows who has not yet), and the resident's face data scrubbed from the
        message log (enrolment embeddings; decision subject ids)."""
        with self.engine.begin() as conn:
            site = self._resident_site(conn, resident_id, lock=True)
            conn.execute(delete(g.resident_faces).where(g.resident_faces.c.resident_id == resident_id))
            if reason == "deleted":
                conn.execute(delete(g.residents).where(g.residents.c.id == resident_id))
            else:
                conn.execute(
                    update(g.residents).where(g.residents.c.id == resident_id).values(consent_ms=None, consent_by=None)
                )
            rev = self._log(conn, g.gallery_log, site, resident_id=resident_id, op="delete")
            conn.execute(
                g.erasures.insert().values(
                    resident_id=resident_id,
                    site_id=site,
                    reason=reason,
                    revision=rev * STEP,
                    requested_ms=now_ms(),
                    by=by,
                )
            )
            scrubbed = self._scrub_logs(conn, site, resident_id)
        self.push(site, "gallery")
        return {"id": resident_id, reason: True, "revision": rev * STEP, "log_entries_scrubbed": scrubbed}

    def _scrub_logs(self, conn: Any, site: str, resident_id: str) -> int:
        """Every log entry of the site naming the resident: decisions, screenings, plate reads and lift requests
        (``subject_id``), and gate events about them (enrolments: their face data too)."""
        c = t.messages.c
        n = 0
        rows = conn.execute(select(c.id, c.type, c.body).where(c.site_id == site, c.type.in_([*SUBJECT_LOGS, "event"])))
        for r in rows.all():
            body = dict(r.body or {})
            if r.type in SUBJECT_LOGS and body.get("subject_id") == resident_id:
                body["subject_id"] = "erased"
            elif r.type == "event" and (body.get("details") or {}).get("resident_id") == resident_id:
                body["details"] = {k: v for k, v in body["details"].items() if k not in FACE_DATA}
                body["details"]["resident_id"] = "erased"
            else:
                continue
            conn.execute(update(t.messages).where(c.id == r.id).values(body=body))
            n += 1
        return n

    def erasures(self, site_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Recent erasures, each with the gates that have not yet acknowledged it (completed when none)."""
        with self.engine.begin() as conn:
            q = select(g.erasures).order_by(g.erasures.c.id.desc()).limit(limit)
            if site_id:
                q = q.where(g.erasures.c.site_id == site_id)
            out = []
            for e in conn.execute(q).all():
                gates = conn.execute(
                    select(t.devices.c.id, g.gate_sync.c.revision)
                    .select_from(
                        t.devices.outerjoin(
                            g.gate_sync, (g.gate_sync.c.device_id == t.devices.c.id) & (g.gate_sync.c.what == "gallery")
                        )
                    )
                    .where(t.devices.c.site_id == e.site_id, t.devices.c.kind == "gate")
                    .order_by(t.devices.c.id)
                ).all()
                pending = [r.id for r in gates if r.revision is None or r.revision < e.revision]
                done = e.completed_ms
                if not pending and done is None:
                    done = now_ms()
                    conn.execute(update(g.erasures).where(g.erasures.c.id == e.id).values(completed_ms=done))
                out.append(
                    {
                        **dict(e._mapping),
                        "completed_ms": done,
                        "gates": len(gates),
                        "pending_gates": pending,
                    }
                )
        return out

    def _resident_site(self, conn: Any, resident_id: str, lock: bool = False) -> str:
        """The resident's site; ``lock``: hold the resident's row until the transaction ends, so an enrolment and
        an erasure of the same resident run one after the other (a face added while consent is being withdrawn
        would otherwise survive the erasure)."""
        q = select(g.residents.c.site_id).where(g.residents.c.id == resident_id)
        row = conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise LookupError(f"resident {resident_id}")
        return str(row.site_id)

    # --- plates ----------------------------------------------------------------------------------------

    def add_plate(
        self, site_id: str, plate: str, holder: str, kind: str, valid_from_ms: int | None, valid_until_ms: int | None
    ) -> dict[str, Any]:
        p = normalize(plate)  # PlateError (a GateError for the API) says why
        if valid_from_ms is not None and valid_until_ms is not None and valid_until_ms <= valid_from_ms:
            raise GateError("valid_until_ms must be after valid_from_ms")
        with self.engine.begin() as conn:
            if conn.execute(select(t.sites.c.id).where(t.sites.c.id == site_id)).first() is None:
                raise LookupError(f"site {site_id}")
            conn.execute(delete(g.plates).where(g.plates.c.site_id == site_id, g.plates.c.plate == p))
            conn.execute(
                g.plates.insert().values(
                    site_id=site_id,
                    plate=p,
                    holder=holder,
                    kind=kind,
                    valid_from_ms=valid_from_ms,
                    valid_until_ms=valid_until_ms,
                    created_ms=now_ms(),
                )
            )
            rev = self._log(conn, g.allowlist_log, site_id, plate=p, op="upsert")
        self.push(site_id, "allowlist")
        return {"site_id": site_id, "plate": p, "holder": holder, "kind": kind, "revision": rev * STEP}

    def remove_plate(self, site_id: str, plate: str) -> dict[str, Any]:
        p = normalize(plate)
        with self.engine.begin() as conn:
            n = conn.execute(delete(g.plates).where(g.plates.c.site_id == site_id, g.plates.c.plate == p)).rowcount
            if not n:
                raise LookupError(f"plate {p} at {site_id}")
            rev = self._log(conn, g.allowlist_log, site_id, plate=p, op="delete")
        self.push(site_id, "allowlist")
        return {"plate": p, "deleted": True, "revision": rev * STEP}

    # --- the change logs and deltas --------------------------------------------------------------------

    def _log(self, conn: Any, table: Any, site: str, **row: Any) -> int:
        rev = int(conn.execute(table.insert().values(site_id=site, created_ms=now_ms(), **row)).inserted_primary_key[0])
        conn.execute(delete(table).where(table.c.site_id == site, table.c.revision <= rev - LOG_KEEP))
        return rev

    def _head(self, conn: Any, table: Any, site: str) -> tuple[int, int]:
        """(newest revision, oldest revision still in the log) for a site; (0, 0) when empty."""
        row = conn.execute(
            select(func.max(table.c.revision), func.min(table.c.revision)).where(table.c.site_id == site)
        ).first()
        return (int(row[0] or 0), int(row[1] or 0))

    def deltas(self, site: str, what: str, have: int | None) -> list[GalleryDelta] | list[AllowlistDelta]:
        """What a gateway at wire revision ``have`` needs (possibly nothing)."""
        table = g.gallery_log if what == "gallery" else g.allowlist_log
        with self.engine.connect() as conn:
            head, oldest = self._head(conn, table, site)
            if have is not None and have % STEP == 0 and have // STEP == head:
                return []
            incremental = have is not None and have % STEP == 0 and have // STEP >= oldest - 1 and head > 0
            if incremental and have is not None:
                rows = conn.execute(
                    select(table)
                    .where(table.c.site_id == site, table.c.revision > have // STEP)
                    .order_by(table.c.revision)
                ).all()
                key = "resident_id" if what == "gallery" else "plate"
                changed = list(dict.fromkeys(getattr(r, key) for r in rows))
                return self._build(conn, what, site, changed, head, base=have)
            if what == "gallery":
                ids = [r.id for r in conn.execute(select(g.residents.c.id).where(g.residents.c.site_id == site))]
            else:
                ids = [r.plate for r in conn.execute(select(g.plates.c.plate).where(g.plates.c.site_id == site))]
            return self._build(conn, what, site, ids, head, base=None)

    def _build(self, conn: Any, what: str, site: str, keys: list[str], head: int, base: int | None) -> list[Any]:
        upserts: list[Any] = []
        deletes: list[str] = []
        if what == "gallery":
            units = dict(
                conn.execute(select(g.residents.c.id, g.residents.c.unit).where(g.residents.c.id.in_(keys))).all()
            )
            faces: dict[str, list[bytes]] = {}
            for r in conn.execute(select(g.resident_faces).where(g.resident_faces.c.resident_id.in_(keys))):
                faces.setdefault(r.resident_id, []).append(self.vault.open(r.embedding, r.resident_id))
            for k in keys:
                if k not in units or not faces.get(k):
                    deletes.append(k)
                    continue
                upserts += [
                    GalleryEntry(resident_id=k, unit=units[k], embedding_b64=base64.b64encode(e).decode())
                    for e in faces[k]
                ]
        else:
            rows = {
                r.plate: r
                for r in conn.execute(select(g.plates).where(g.plates.c.site_id == site, g.plates.c.plate.in_(keys)))
            }
            for k in keys:
                r = rows.get(k)
                if r is None:
                    deletes.append(k)
                else:
                    upserts.append(
                        PlateEntry(
                            plate=r.plate,
                            holder=r.holder,
                            kind=r.kind,
                            valid_from_ts=r.valid_from_ms,
                            valid_until_ts=r.valid_until_ms,
                        )
                    )
        parts_up = [upserts[i : i + PART] for i in range(0, len(upserts), PART)] or [[]]
        parts_del = [deletes[i : i + PART] for i in range(0, len(deletes), PART)]
        n = max(len(parts_up), len(parts_del))
        cls: Any = GalleryDelta if what == "gallery" else AllowlistDelta
        out = []
        prev = base
        final = head * STEP
        for i in range(n):
            rev = final - (n - 1 - i)
            up = parts_up[i] if i < len(parts_up) else []
            dl = parts_del[i] if i < len(parts_del) else []
            out.append(cls(revision=rev, base_revision=prev, upserts=up, deletes=dl))
            prev = rev
        return out

    def push(
        self,
        site: str,
        what: str,
        device: str | None = None,
        have: int | None = None,
        strict: bool = False,
        nonce: str | None = None,
    ) -> int:
        """Send the deltas to the site's gates (gallery) or barriers (allow-list); return messages sent. Each
        device's copy carries back the nonce it last asked with (``nonce`` for a reply to ``device``): a gateway
        with an empty copy takes only an answer to its own request (edge.trust)."""
        pub = self._publisher()
        if pub is None:
            return 0
        kind = "gate" if what == "gallery" else "barrier"
        with self.engine.connect() as conn:
            q = select(t.devices.c.id).where(t.devices.c.site_id == site, t.devices.c.kind == kind)
            if device is not None:
                q = q.where(t.devices.c.id == device)
            devices = [r.id for r in conn.execute(q)]
            s = g.gate_sync.c
            asked = dict(
                conn.execute(
                    select(s.device_id, s.nonce).where(s.site_id == site, s.what == what, s.nonce.is_not(None))
                ).all()
            )
        if device is not None and nonce is not None:
            asked[device] = nonce
        if device is not None:
            since = have  # a gateway that reported its revision: exactly what it lacks
        else:  # a change: everyone gets the newest step on top of the previous head
            with self.engine.connect() as conn:
                head, _ = self._head(conn, g.gallery_log if what == "gallery" else g.allowlist_log, site)
            since = (head - 1) * STEP if head > 1 else None
        deltas = self.deltas(site, what, since) if devices else []
        sent = 0
        for dev in devices:
            for d in deltas:
                try:
                    pub.publish(site, dev, "gallery", d.model_copy(update={"nonce": asked.get(dev)}))
                    sent += 1
                except ConnectionError as exc:
                    if strict:
                        raise
                    log.warning("delta not sent", extra={"device": dev, "error": str(exc)})
                    break
        return sent

    def want_sync(self, requests: list[tuple[str, str, str, int, str | None]]) -> bool:
        """Note gateways' sync requests (the latest of each wins); True when none was waiting, so the
        caller schedules :meth:`answer_wanted` (once for any number of requests)."""
        with self._wanted_lock:
            idle = not self._wanted
            for site, device, what, have, nonce in requests:
                self._wanted[(site, device, what)] = (have, nonce)
            return idle

    def answer_wanted(self) -> None:
        """Answer every waiting sync request, once each."""
        with self._wanted_lock:
            wanted, self._wanted = self._wanted, {}
        self.on_sync_requests([(s, d, w, have, nonce) for (s, d, w), (have, nonce) in wanted.items()])

    def on_sync_requests(self, requests: list[tuple[str, str, str, int, str | None]], attempts: int = 6) -> None:
        """Answer gateways that reported their revision; the broker may still be coming back (this runs
        right after a gateway reconnects), so a failed send is retried with a backoff."""
        for site, device, what, have, nonce in requests:
            for attempt in range(attempts):
                try:
                    self.push(site, what, device=device, have=have, strict=True, nonce=nonce)
                    break
                except ConnectionError:
                    if self.stopping.wait(min(2**attempt, 10)):  # on the sync thread, never the event loop
                        return
                except Exception:  # never take ingestion down with a sync
                    log.exception("sync failed", extra={"device": device})
                    break

    def on_enrolments(self, enrolments: list[tuple[str, str]]) -> None:
        """Faces an operator enrolled at a gate become part of the resident's record (and reach the other
        gates); an unknown resident is logged and skipped — residents are created in the cloud first."""
        for rid, emb_b64 in enrolments:
            try:
                vec = np.frombuffer(base64.b64decode(emb_b64, validate=True), dtype="<f4")
                self.add_faces(rid, [vec])
            except (LookupError, GateError, ValueError) as exc:
                log.warning("gate enrolment refused", extra={"resident": rid, "error": str(exc)})

    # --- visitors --------------------------------------------------------------------------------------

    def expire_requests(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(g.visitor_requests)
                .where(g.visitor_requests.c.status == "pending", g.visitor_requests.c.expires_ms < now_ms())
                .values(status="expired")
            )

    def answer(self, request_id: str, approved: bool, by: str) -> dict[str, Any]:
        self.expire_requests()
        with self.engine.begin() as conn:
            r = conn.execute(select(g.visitor_requests).where(g.visitor_requests.c.request_id == request_id)).first()
            if r is None:
                raise LookupError(f"visitor request {request_id}")
            if r.status != "pending":
                raise GateError(f"visitor request {request_id} is {r.status}")
            conn.execute(
                update(g.visitor_requests)
                .where(g.visitor_requests.c.request_id == request_id)
                .values(status="approved" if approved else "denied", answered_by=by, answered_ms=now_ms())
            )
        pub = self._publisher()
        if pub is None:
            raise ConnectionError("no broker connection on this cloud node")
        ttl_s = max(1.0, (r.expires_ms - now_ms()) / 1000)
        cmd = pub.send(r.device_id, "visitor-answer", {"request_id": request_id, "approved": approved, "by": by}, ttl_s)
        return {"request_id": request_id, "status": "approved" if approved else "denied", "command": cmd["cid"]}
