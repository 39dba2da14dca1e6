"""The devices' REST API: sites, devices, telemetry, events, dead letters and commands."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from cloud.api.deps import (
    Conn,
    CurrentUser,
    DeviceId,
    DevicePublicKey,
    Page,
    Paging,
    RecordKey,
    Service,
    allow,
    insert_new,
    paged,
    require_token,
    run,
)
from cloud.api.models import (
    Command,
    CommandSent,
    DeadLetterSummary,
    Device,
    DevicesCreated,
    NewDevice,
    Site,
    Telemetry,
)
from cloud.auth.scope import can_see_device
from cloud.db import schema as t
from cloud.devices import actions as devices_actions
from cloud.devices import queries, service
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
    return paged(conn, queries.sites(), p)


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
    return paged(conn, queries.devices(user, site, kind, status), p)


@router.post(
    "/devices", status_code=201, response_model=NewDevice, tags=["devices"], dependencies=[allow("devices.command")]
)
def create_device(body: DeviceIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    try:
        service.create_device(svc.engine, _new(body))
    except service.DeviceError as exc:
        raise HTTPException(409 if exc.conflict else 422, detail=str(exc)) from None
    svc.device_changed(body.id)
    if body.signing_key:
        svc.auth.audit(user.username, "device.signing_key", body.id, {"key": body.signing_key[:12]})
    return body.model_dump(exclude={"signing_key"})


def _new(d: DeviceIn) -> service.NewDevice:
    return service.NewDevice(d.id, d.site_id, d.kind, d.name, d.signing_key)


class DevicesIn(BaseModel):
    devices: list[DeviceIn] = Field(min_length=1, max_length=50_000)


@router.post("/devices/bulk", response_model=DevicesCreated, tags=["devices"], dependencies=[allow("devices.command")])
def create_devices(body: DevicesIn, svc: Service) -> dict[str, int]:
    """Register many devices at once (a district's nodes); existing ids are left as they are."""
    try:
        created = service.create_devices(svc.engine, [_new(d) for d in body.devices])
    except service.DeviceError as exc:
        raise HTTPException(409 if exc.conflict else 422, detail=str(exc)) from None
    for d in body.devices:
        svc.device_changed(d.id)
    return {"created": created, "existing": len(body.devices) - created}


@router.get("/devices/{device_id}", response_model=Device, tags=["devices"], dependencies=[allow("devices.view")])
def get_device(device_id: DeviceId, conn: Conn, user: CurrentUser) -> dict[str, Any]:
    d = queries.device(conn, user, device_id)
    if d is None:
        raise HTTPException(404, detail=f"no device {device_id!r}")
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
    points = queries.telemetry(conn, device_id, metric, since, until, bucket_s, limit)
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
    return paged(conn, queries.messages(user, device, type, since), p)


@router.get("/dead-letters", response_model=Page, tags=["dead letters"], dependencies=[allow("devices.view")])
def dead_letters(conn: Conn, p: Paging, reason: str | None = None) -> Page:
    return paged(conn, queries.dead_letters(reason), p)


@router.get(
    "/dead-letters/summary",
    response_model=DeadLetterSummary,
    tags=["dead letters"],
    dependencies=[allow("devices.view")],
)
def dead_letter_summary(conn: Conn) -> dict[str, int]:
    return queries.dead_letter_summary(conn)


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
    return run(devices_actions.send_command, svc, user, device_id, body.name, body.args, body.ttl_s)  # type: ignore[no-any-return]


@router.get("/commands/{cid}", response_model=Command, tags=["commands"], dependencies=[allow("devices.view")])
def get_command(cid: RecordKey, conn: Conn, user: CurrentUser) -> dict[str, Any]:
    d = queries.command(conn, user, cid, now_ms())
    if d is None:
        raise HTTPException(404, detail=f"no command {cid!r}")
    return d


@router.get("/commands", response_model=Page, tags=["commands"], dependencies=[allow("devices.view")])
def list_commands(conn: Conn, p: Paging, user: CurrentUser, device: str | None = None) -> Page:
    return paged(conn, queries.commands(user, device), p)
