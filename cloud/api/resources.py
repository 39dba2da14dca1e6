"""Sites, devices, telemetry, events, alarms, dead letters and commands."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from cloud import actions
from cloud.api.deps import (
    Conn,
    CurrentUser,
    DeviceId,
    DevicePublicKey,
    Page,
    Paging,
    RecordKey,
    Service,
    acting,
    allow,
    insert_new,
    paged,
    require_token,
    run,
)
from cloud.api.models import (
    Alarm,
    AlarmHistoryEntry,
    Command,
    CommandSent,
    DeadLetterSummary,
    Device,
    DevicesCreated,
    NewDevice,
    Rules,
    RulesLoaded,
    Site,
    Telemetry,
)
from cloud.auth.scope import alarm_filter, can_see_device, device_filter
from cloud.db import schema as t
from cloud.ingest.store import now_ms
from protocol.topics import validate_id, validate_name

router = APIRouter(prefix="/api", dependencies=[Depends(require_token)])
IdStr = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]


# --- sites -----------------------------------------------------------------------------------------


class SiteIn(BaseModel):
    id: IdStr
    name: str = Field(default="", max_length=200)


@router.get("/sites", response_model=Page, tags=["sites"], dependencies=[allow("devices.view")])
def list_sites(conn: Conn, p: Paging) -> Page:
    return paged(conn, select(t.sites).order_by(t.sites.c.id), p)


@router.post("/sites", status_code=201, response_model=Site, tags=["sites"], dependencies=[allow("devices.command")])
def create_site(body: SiteIn, svc: Service) -> dict[str, Any]:
    insert_new(svc, t.sites, {"id": body.id, "name": body.name or body.id}, "site")
    return {"id": body.id, "name": body.name or body.id}


# --- devices ---------------------------------------------------------------------------------------


class DeviceIn(BaseModel):
    id: IdStr
    site_id: IdStr
    kind: str = Field(default="gateway", max_length=32)
    name: str = Field(default="", max_length=200)
    signing_key: DevicePublicKey | None = Field(
        default=None, description="the device's own public key (civicedge edge keygen): its messages must be signed"
    )


@router.get("/devices", response_model=Page, tags=["devices"], dependencies=[allow("devices.view")])
def list_devices(
    conn: Conn,
    p: Paging,
    user: CurrentUser,
    site: str | None = None,
    kind: str | None = None,
    status: Literal["online", "offline", "unknown"] | None = None,
) -> Page:
    q = select(t.devices).where(device_filter(user)).order_by(t.devices.c.site_id, t.devices.c.id)
    if site:
        q = q.where(t.devices.c.site_id == site)
    if kind:
        q = q.where(t.devices.c.kind == kind)
    if status:
        q = q.where(t.devices.c.status == status)
    return paged(conn, q, p)


@router.post(
    "/devices", status_code=201, response_model=NewDevice, tags=["devices"], dependencies=[allow("devices.command")]
)
def create_device(body: DeviceIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    from cloud.provisioning.service import signing_key_holder

    with svc.engine.begin() as conn:
        if (holder := signing_key_holder(conn, body.signing_key, body.id)) is not None:
            raise HTTPException(409, detail=f"this signing key is registered for {holder}: each gateway makes its own")
        if not conn.execute(select(t.sites.c.id).where(t.sites.c.id == body.site_id)).first():
            raise HTTPException(422, detail=f"site {body.site_id!r} does not exist; create it first (POST /api/sites)")
        if conn.execute(select(t.devices.c.id).where(t.devices.c.id == body.id)).first():
            raise HTTPException(409, detail=f"device {body.id!r} exists")
        conn.execute(
            t.devices.insert().values(
                id=body.id,
                site_id=body.site_id,
                kind=body.kind,
                name=body.name or body.id,
                status="unknown",
                created_ms=now_ms(),
                signing_key=body.signing_key,
            )
        )
    svc.device_changed(body.id)
    if body.signing_key:
        svc.auth.audit(user.username, "device.signing_key", body.id, {"key": body.signing_key[:12]})
    return body.model_dump(exclude={"signing_key"})


class DevicesIn(BaseModel):
    devices: list[DeviceIn] = Field(min_length=1, max_length=50_000)


@router.post("/devices/bulk", response_model=DevicesCreated, tags=["devices"], dependencies=[allow("devices.command")])
def create_devices(body: DevicesIn, svc: Service) -> dict[str, int]:
    """Register many devices at once (a district's nodes); existing ids are left as they are."""
    from cloud.provisioning.service import signing_key_holder

    sites = {d.site_id for d in body.devices}
    with svc.engine.begin() as conn:
        known = {r[0] for r in conn.execute(select(t.sites.c.id).where(t.sites.c.id.in_(sites)))}
        if missing := sites - known:
            raise HTTPException(
                422, detail=f"sites {sorted(missing)} do not exist; create them first (POST /api/sites)"
            )
        have = {r[0] for r in conn.execute(select(t.devices.c.id))}
        now = now_ms()
        rows = [
            {
                "id": d.id,
                "site_id": d.site_id,
                "kind": d.kind,
                "name": d.name or d.id,
                "status": "unknown",
                "created_ms": now,
                "signing_key": d.signing_key,
            }
            for d in {d.id: d for d in body.devices}.values()
            if d.id not in have
        ]
        new = [d for d in {d.id: d for d in body.devices}.values() if d.id not in have and d.signing_key]
        keys = [d.signing_key for d in new]
        taken = [h for d in new if (h := signing_key_holder(conn, d.signing_key, d.id)) is not None]
        if len(set(keys)) != len(keys) or taken:
            raise HTTPException(
                409, detail="a signing key is given twice or is registered already: each gateway makes its own"
            )
        if rows:
            conn.execute(t.devices.insert(), rows)
    for d in body.devices:
        svc.device_changed(d.id)
    return {"created": len(rows), "existing": len(body.devices) - len(rows)}


@router.get("/devices/{device_id}", response_model=Device, tags=["devices"], dependencies=[allow("devices.view")])
def get_device(device_id: DeviceId, conn: Conn, user: CurrentUser) -> dict[str, Any]:
    row = conn.execute(select(t.devices).where(t.devices.c.id == device_id, device_filter(user))).first()
    if row is None:
        raise HTTPException(404, detail=f"no device {device_id!r}")
    d = dict(row._mapping)
    d["open_alarms"] = conn.execute(
        select(func.count())
        .select_from(t.alarms)
        .where(t.alarms.c.device_id == device_id, t.alarms.c.state != "cleared")
    ).scalar_one()
    return d


@router.get(
    "/devices/{device_id}/telemetry", response_model=Telemetry, tags=["telemetry"], dependencies=[allow("devices.view")]
)
def telemetry(
    device_id: DeviceId,
    conn: Conn,
    user: CurrentUser,
    metric: Annotated[str, Query(description="metric name")],
    since: Annotated[int | None, Query(ge=0, le=2**53, description="ms since epoch (default: 1 h ago)")] = None,
    until: Annotated[int | None, Query(ge=0, le=2**53, description="ms since epoch (default: now)")] = None,
    bucket_s: Annotated[
        float | None, Query(gt=0, le=366 * 86_400, description="downsample into buckets of this many seconds")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> dict[str, Any]:
    if not can_see_device(conn, user, device_id):
        raise HTTPException(404, detail=f"no device {device_id!r}")
    until = until if until is not None else now_ms()
    since = since if since is not None else until - 3_600_000
    c = t.telemetry.c
    where = (c.device_id == device_id, c.metric == metric, c.ts >= since, c.ts <= until)
    if bucket_s is None:
        rows = conn.execute(select(c.ts, c.value).where(*where).order_by(c.ts).limit(limit))
        points = [{"ts": r.ts, "value": r.value} for r in rows]
    else:
        width = max(1, int(bucket_s * 1000))  # a bucket under a millisecond is a millisecond
        b = ((c.ts - since) // width).label("b")
        rows = conn.execute(
            select(b, func.avg(c.value), func.min(c.value), func.max(c.value), func.count())
            .where(*where)
            .group_by(b)
            .order_by(b)
            .limit(limit)
        )
        points = [
            {"ts": since + int(bb) * width, "avg": avg, "min": lo, "max": hi, "count": n}
            for bb, avg, lo, hi, n in (tuple(r) for r in rows)
        ]
    return {
        "device_id": device_id,
        "metric": metric,
        "since": since,
        "until": until,
        "bucket_s": bucket_s,
        "points": points,
    }


# --- events, alarms, dead letters ------------------------------------------------------------------


@router.get("/events", response_model=Page, tags=["events"], dependencies=[allow("devices.view")])
def events(
    conn: Conn,
    p: Paging,
    user: CurrentUser,
    device: str | None = None,
    type: str | None = None,
    since: int | None = None,
) -> Page:
    c = t.messages.c
    q = select(t.messages).order_by(c.received_ms.desc(), c.id.desc())
    q = q.where(device_filter(user, c.device_id))
    if device:
        q = q.where(c.device_id == device)
    if type:
        q = q.where(c.type == type)
    if since is not None:
        q = q.where(c.received_ms >= since)
    return paged(conn, q, p)


@router.get("/alarms", response_model=Page, tags=["alarms"], dependencies=[allow("alarms.view")])
def alarms(
    conn: Conn,
    p: Paging,
    user: CurrentUser,
    state: Literal["open", "active", "acknowledged", "cleared"] | None = None,
    device: str | None = None,
) -> Page:
    """Alarms, newest first; ``open`` = active or acknowledged."""
    c = t.alarms.c
    q = select(t.alarms).where(alarm_filter(user)).order_by(c.raised_ms.desc(), c.id.desc())
    if state == "open":
        q = q.where(c.state != "cleared")
    elif state:
        q = q.where(c.state == state)
    if device:
        q = q.where(c.device_id == device)
    return paged(conn, q, p)


class AlarmAction(BaseModel):
    by: str = Field(min_length=1, max_length=64, description="who (operator name; the audit log keeps 64 characters)")
    note: str = Field(default="", max_length=1000)


def _alarm_action(svc: Service, user: CurrentUser, alarm_id: int, action: str, body: AlarmAction) -> dict[str, Any]:
    return run(actions.alarm_act, svc, acting(user, body.by), alarm_id, action, body.note)  # type: ignore[no-any-return]


@router.post("/alarms/{alarm_id}/ack", response_model=Alarm, tags=["alarms"], dependencies=[allow("alarms.act")])
def ack_alarm(alarm_id: int, body: AlarmAction, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Acknowledge: an operator has seen it and owns it; it stays open until cleared."""
    return _alarm_action(svc, user, alarm_id, "acknowledged", body)


@router.post("/alarms/{alarm_id}/clear", response_model=Alarm, tags=["alarms"], dependencies=[allow("alarms.act")])
def clear_alarm(alarm_id: int, body: AlarmAction, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Clear by hand (devices clear their own alarms with ``alarm.clear``)."""
    return _alarm_action(svc, user, alarm_id, "cleared", body)


@router.get(
    "/alarms/{alarm_id}/history",
    response_model=list[AlarmHistoryEntry],  # type: ignore[valid-type]
    tags=["alarms"],
    dependencies=[allow("alarms.view")],
)
def alarm_history(alarm_id: int, conn: Conn, user: CurrentUser) -> list[dict[str, Any]]:
    if conn.execute(select(t.alarms.c.id).where(t.alarms.c.id == alarm_id, alarm_filter(user))).first() is None:
        raise HTTPException(404, detail=f"no alarm {alarm_id}")
    h = t.alarm_history.c
    rows = conn.execute(select(t.alarm_history).where(h.alarm_id == alarm_id).order_by(h.at_ms, h.id))
    return [dict(r._mapping) for r in rows]


@router.get("/dead-letters", response_model=Page, tags=["dead letters"], dependencies=[allow("devices.view")])
def dead_letters(conn: Conn, p: Paging, reason: str | None = None) -> Page:
    c = t.dead_letters.c
    q = select(c.id, c.received_ms, c.topic, c.reason, c.detail, c.device_id, c.size).order_by(c.id.desc())
    if reason:
        q = q.where(c.reason == reason)
    return paged(conn, q, p)


@router.get(
    "/dead-letters/summary",
    response_model=DeadLetterSummary,
    tags=["dead letters"],
    dependencies=[allow("devices.view")],
)
def dead_letter_summary(conn: Conn) -> dict[str, int]:
    c = t.dead_letters.c
    return {r[0]: r[1] for r in conn.execute(select(c.reason, func.count()).group_by(c.reason))}


# --- commands --------------------------------------------------------------------------------------


class CommandIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    args: dict[str, Any] = Field(default_factory=dict)
    ttl_s: float | None = Field(default=None, gt=0, le=86_400, description="validity (default from settings)")


@router.post(
    "/devices/{device_id}/commands",
    status_code=202,
    response_model=CommandSent,
    tags=["commands"],
    dependencies=[allow("devices.command")],
)
def send_command(device_id: DeviceId, body: CommandIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    try:
        validate_id(device_id, "device")
        validate_name(body.name)
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    return run(actions.send_command, svc, user, device_id, body.name, body.args, body.ttl_s)  # type: ignore[no-any-return]


@router.get("/commands/{cid}", response_model=Command, tags=["commands"], dependencies=[allow("devices.view")])
def get_command(cid: RecordKey, conn: Conn, user: CurrentUser) -> dict[str, Any]:
    c = t.commands.c
    row = conn.execute(select(t.commands).where(c.cid == cid, device_filter(user, c.device_id))).first()
    if row is None:
        raise HTTPException(404, detail=f"no command {cid!r}")
    d = dict(row._mapping)
    if d["status"] == "sent" and d["deadline_ms"] < now_ms():
        d["status"] = "expired"  # never acknowledged before its deadline
    return d


@router.get("/commands", response_model=Page, tags=["commands"], dependencies=[allow("devices.view")])
def list_commands(conn: Conn, p: Paging, user: CurrentUser, device: str | None = None) -> Page:
    q = select(t.commands).where(device_filter(user, t.commands.c.device_id)).order_by(t.commands.c.created_ms.desc())
    if device:
        q = q.where(t.commands.c.device_id == device)
    return paged(conn, q, p)


# --- rules -----------------------------------------------------------------------------------------


@router.get("/rules", response_model=Rules, tags=["rules"], dependencies=[allow("rules.view")])
def list_rules(svc: Service) -> dict[str, Any]:
    if svc.rules is None:
        return {"file": None, "rules": [], "active": []}
    return {
        "file": str(svc.settings.rules_file),
        "rules": [r.model_dump(mode="json") for r in svc.rules.engine.rules],
        "active": [{"rule": r, "device": d} for r, d in svc.rules.active()],
    }


@router.post("/rules/reload", response_model=RulesLoaded, tags=["rules"], dependencies=[allow("rules.reload")])
def reload_rules(svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Re-read the rules file; a bad file is refused with the reasons and the running rules stay."""
    return run(actions.reload_rules, svc, user)  # type: ignore[no-any-return]
