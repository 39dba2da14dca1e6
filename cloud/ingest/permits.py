"""What a device's message may create or change in the cloud: only what belongs to its own site.

The wire contract (``protocol``) says what a message may look like; this module says what a *valid* message
from a given device may touch. It runs inside the batch's transaction, after the device, its site and the
topic were checked, and answers with the reason a message is refused (dead-lettered ``not_permitted``), or
None. docs/security.md lists every message type and what it may touch; keep the two in step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Connection, exists, select

from cloud.db import schema as t
from cloud.gate import tables as g
from protocol import messages as m
from protocol.envelope import Envelope, now_ms
from protocol.limits import EMBEDDING_DIM, strict_base64


def refusal(conn: Connection, site: str, env: Envelope) -> str | None:
    """Why a device registered at ``site`` may not have the cloud act on ``env``; None: it may. (Pictures need
    no check here: each is stored under the sending device's id and its ref, so no device can take another's.)"""
    b = env.body
    if isinstance(b, m.DeviceEvent) and b.code == "gallery.enrolled":
        return _enrolment(conn, site, b.details) or _asked_for(conn, env.dev, b.details["resident_id"], env)
    if isinstance(b, m.GateDecision) and b.subject_id is not None:
        if b.method in ("face", "card"):
            return _resident(conn, site, b.subject_id)
        if b.method == "plate":
            return _plate_holder(conn, site, b.subject_id)
    if isinstance(b, m.TemperatureScreening) and b.subject_id is not None:
        return _resident(conn, site, b.subject_id)
    if isinstance(b, m.PlateRead) and b.subject_id is not None:
        return _plate_holder(conn, site, b.subject_id)
    if isinstance(b, m.VisitorRequest):
        flat = exists().where(g.residents.c.site_id == site, g.residents.c.unit == b.unit)
        if not conn.execute(select(flat)).scalar():
            return f"no resident of site {site!r} lives in flat {b.unit!r}"
    return None


def _resident(conn: Connection, site: str, resident_id: str) -> str | None:
    at = conn.execute(select(g.residents.c.site_id).where(g.residents.c.id == resident_id)).scalar()
    if at != site:
        return f"{resident_id!r} is not a resident of site {site!r}"
    return None


def _plate_holder(conn: Connection, site: str, holder: str) -> str | None:
    held = exists().where(g.plates.c.site_id == site, g.plates.c.holder == holder)
    if not conn.execute(select(held)).scalar():
        return f"{holder!r} holds no plate at site {site!r}"
    return None


def _enrolment(conn: Connection, site: str, details: dict[str, Any]) -> str | None:
    """A face enrolled at a gate: for a resident of the gate's own site who consented, one finite embedding."""
    rid, emb = details.get("resident_id"), details.get("embedding_b64")
    if not isinstance(rid, str) or not isinstance(emb, str):
        return "an enrolment names resident_id and embedding_b64 (strings)"
    try:
        raw = strict_base64(emb)
    except ValueError as exc:
        return f"embedding_b64 is {exc}"
    if len(raw) != EMBEDDING_DIM * 4 or not np.isfinite(np.frombuffer(raw, dtype="<f4")).all():
        return f"an embedding is {EMBEDDING_DIM} finite float32 values"
    row = conn.execute(select(g.residents.c.site_id, g.residents.c.consent_ms).where(g.residents.c.id == rid)).first()
    if row is None or row.site_id != site:
        return f"{rid!r} is not a resident of site {site!r}"
    if row.consent_ms is None:
        return f"resident {rid!r} has not consented to face recognition"
    return None


#: how long after an operator asks a gate to enrol a face the gate's enrolment is taken
ENROL_WINDOW_MS = 15 * 60_000


def _asked_for(conn: Connection, device: str, resident_id: str, env: Envelope) -> str | None:
    """A face becomes part of a resident's record only when an operator asked this gate to enrol this resident
    (a signed ``enroll`` command, minutes ago) and the gate has not answered that request already: device
    messages cross the broker unsigned, so an enrolment nobody asked for (whoever holds the broker can publish
    one) is refused, and one request takes one face."""
    c = t.commands.c
    since = now_ms() - ENROL_WINDOW_MS
    asked = [
        r.created_ms
        for r in conn.execute(
            select(c.created_ms, c.args).where(c.device_id == device, c.name == "enroll", c.created_ms >= since)
        )
        if (r.args or {}).get("resident_id") == resident_id
    ]
    if not asked:
        return f"no enrolment of {resident_id!r} was asked of {device!r} in the last {ENROL_WINDOW_MS // 60_000} min"
    m_ = t.messages.c
    taken = sum(
        1
        for r in conn.execute(
            select(m_.body).where(
                m_.device_id == device, m_.type == "event", m_.received_ms >= min(asked), m_.msg_id != env.id
            )
        )
        if (r.body or {}).get("code") == "gallery.enrolled"
        and ((r.body or {}).get("details") or {}).get("resident_id") == resident_id
    )
    if taken >= len(asked):
        return f"the enrolment of {resident_id!r} asked of {device!r} was already answered"
    return None
