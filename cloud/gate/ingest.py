"""What gates and barriers report: decisions, visitors at the door, snapshots, faces enrolled at the gate, and
the revision of their gallery and allow-list (answered by the gate sync after commit)."""

from __future__ import annotations

import re
from typing import Any

from cloud.events import FaceEnrolled, GateDecided, SyncReported, VisitorArrived
from cloud.gate import tables as g
from cloud.ingest.routing import Context, Handler, LogBody
from protocol import messages as m

NONCE = re.compile(m.SYNC_NONCE_PATTERN)
SYNC_EVENTS = {
    "gallery.status": "gallery",
    "gallery.resync": "gallery",
    "allowlist.status": "allowlist",
    "allowlist.resync": "allowlist",
    "gallery.applied": "gallery",  # recorded, not answered
    "allowlist.applied": "allowlist",
}
#: details of a gate's enrolment event that are face data: never kept in the message log
FACE_DATA = frozenset({"embedding_b64", "thumbnail_b64"})


def on_decision(ctx: Context, b: m.GateDecision) -> None:
    ctx.events.append(GateDecided(ctx.device, ctx.site, b.decision, b.reason, b.temperature_c, ctx.received_ms))


def on_visitor(ctx: Context, b: m.VisitorRequest) -> None:
    ctx.events.append(VisitorArrived(ctx.device, ctx.site, b.unit))
    ctx.conn.execute(
        ctx.insert(g.visitor_requests)
        .values(
            request_id=b.request_id,
            site_id=ctx.site,
            device_id=ctx.device,
            door=b.door,
            unit=b.unit,
            snapshot_ref=b.snapshot_ref,
            status="pending",
            created_ms=ctx.received_ms,
            expires_ms=b.expires_ts,
        )
        .on_conflict_do_nothing(index_elements=["request_id"])
    )


def on_snapshot(ctx: Context, b: m.MediaSnapshot) -> None:
    ctx.conn.execute(
        ctx.insert(g.media)
        .values(
            ref=b.ref,
            device_id=ctx.device,
            content_type=b.content_type,
            purpose=b.purpose,
            data=b.data,
            received_ms=ctx.received_ms,
            note="",
        )
        .on_conflict_do_nothing(index_elements=["device_id", "ref"])
    )


def on_event(ctx: Context, b: m.DeviceEvent) -> None:
    if b.code == "gallery.enrolled":
        rid, emb = b.details.get("resident_id"), b.details.get("embedding_b64")
        if isinstance(rid, str) and isinstance(emb, str):
            ctx.events.append(FaceEnrolled(rid, emb))
        return
    what = SYNC_EVENTS.get(b.code)
    rev = b.details.get("revision")
    if what is None or type(rev) is not int:  # not a bool (which Python counts as an int, no database does)
        return
    nonce = b.details.get("nonce")
    nonce = nonce if isinstance(nonce, str) and NONCE.fullmatch(nonce) else None
    # the revision a gate or barrier has (the console shows who still holds erased faces), and the nonce it asked
    # with while its copy is empty (what is sent to it carries it back)
    vals = {"revision": rev, "updated_ms": ctx.received_ms, "site_id": ctx.site, "nonce": nonce}
    ins = ctx.insert(g.gate_sync).values(device_id=ctx.device, what=what, **vals)
    ctx.conn.execute(ins.on_conflict_do_update(index_elements=["device_id", "what"], set_=vals))
    ctx.events.append(SyncReported(ctx.site, ctx.device, what, rev, nonce, not b.code.endswith(".applied")))


def _event_log_body(b: m.DeviceEvent) -> dict[str, Any]:
    body = b.model_dump(mode="json", exclude_none=True)
    if b.code == "gallery.enrolled":  # the embedding is face data: kept only encrypted, with the resident
        body["details"] = {k: v for k, v in body["details"].items() if k not in FACE_DATA}
    return body


HANDLERS: dict[type, Handler] = {
    m.GateDecision: on_decision,
    m.VisitorRequest: on_visitor,
    m.MediaSnapshot: on_snapshot,
    m.DeviceEvent: on_event,
}
LOG_BODIES: dict[type, LogBody] = {
    m.MediaSnapshot: lambda b: b.model_dump(mode="json", exclude={"data_b64"}),  # the image is in the media table
    m.DeviceEvent: _event_log_body,
}
