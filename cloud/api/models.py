"""Response models: what each JSON operation answers, so ``/openapi.json`` describes it.

Records that are database rows are built from their table (:func:`row_model`), so a column added to a table is
in its model too; action results are small explicit models. Every model keeps keys it does not declare
(``extra="allow"``): FastAPI filters an answer through its response model, and nothing a route answers may be
dropped on the way. Field order follows what the routes build, which is the order of the answer's keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model
from sqlalchemy import JSON, Column, Table

from cloud.alarms import tables as alarm_tables
from cloud.auth import tables as a
from cloud.db import schema as t
from cloud.gate import tables as g
from cloud.registry import tables as r
from cloud.updates import tables as u
from cloud.workorders import tables as w


class Out(BaseModel):
    """Base of every response model: keys a route answers beyond the declared ones are kept."""

    model_config = ConfigDict(extra="allow")


def _python_type(col: Column[Any]) -> Any:
    """A column's Python type as the database driver hands it back (JSON columns: anything JSON holds)."""
    if isinstance(col.type, JSON):
        return Any
    try:
        return col.type.python_type
    except NotImplementedError:
        return Any


def row_model(
    table: Table,
    name: str,
    *,
    only: Sequence[str] | None = None,
    drop: Iterable[str] = (),
    doc: str | None = None,
    **extra: Any,
) -> type[Out]:
    """A model of one row of ``table``: its columns (``only`` these, in this order, or all but ``drop``), then
    ``extra`` fields as ``name=(type, default or Field(...))``. Nullable columns are ``X | None = None``."""
    dropped = set(drop)
    cols = [table.c[n] for n in only] if only is not None else [c for c in table.c if c.name not in dropped]
    fields: dict[str, Any] = {}
    for col in cols:
        typ = _python_type(col)
        if col.nullable:
            fields[col.name] = (typ if typ is Any else typ | None, None)
        else:
            fields[col.name] = (typ, ...)
    fields.update(extra)
    model: type[Out] = create_model(name, __base__=Out, __module__=__name__, **fields)
    model.__doc__ = doc or f"A row of {table.name}."
    return model


# --- people ----------------------------------------------------------------------------------------------

_USER = ("username", "role", "department_id", "resident_id", "language")
UserOut = row_model(a.users, "UserOut", only=_USER, doc="A user account (never its password hash).")
Me = row_model(
    a.users,
    "Me",
    only=_USER,
    doc="The user logged in (or the machine a bearer token stands for).",
    csrf=(str | None, Field(None, description="echo in X-CSRF-Token on unsafe requests (sessions only)")),
)


class LoggedOut(Out):
    logged_out: str = Field(description="the user whose session ended")


class UserChanged(Out):
    username: str = Field(description="the user changed")
    disabled: bool | None = Field(description="the new disabled flag (null: left as it was)")
    password_changed: bool = Field(description="a new password was set")
    streams_ended: int = Field(description="live console streams of that user ended now")


# --- sites, devices, telemetry, alarms, commands, rules --------------------------------------------------

Site = row_model(t.sites, "Site", only=("id", "name"), doc="A site as created.")
NewDevice = row_model(t.devices, "NewDevice", only=("id", "site_id", "kind", "name"), doc="A device as registered.")
Device = row_model(
    t.devices,
    "Device",
    doc="A device with its latest status and health.",
    open_alarms=(int, Field(description="alarms of this device not yet cleared")),
)


class DevicesCreated(Out):
    created: int = Field(description="devices registered now")
    existing: int = Field(description="devices sent that were already registered (or repeated), left as they were")


class TelemetryPoint(Out):
    ts: int = Field(description="ms since epoch")
    value: float = Field(description="the reading")


class TelemetryBucket(Out):
    ts: int = Field(description="start of the bucket, ms since epoch")
    avg: float = Field(description="mean of the readings in the bucket")
    min: float = Field(description="lowest reading")
    max: float = Field(description="highest reading")
    count: int = Field(description="readings in the bucket")


class Telemetry(Out):
    device_id: str = Field(description="the device")
    metric: str = Field(description="the metric")
    since: int = Field(description="start of the window, ms since epoch")
    until: int = Field(description="end of the window, ms since epoch")
    bucket_s: float | None = Field(description="bucket width in seconds (null: raw readings)")
    points: list[TelemetryPoint | TelemetryBucket] = Field(
        description="raw readings {ts, value}, or buckets {ts, avg, min, max, count} when bucket_s is given"
    )


Alarm = row_model(alarm_tables.alarms, "Alarm", doc="An alarm as it stands.")
AlarmHistoryEntry = row_model(alarm_tables.alarm_history, "AlarmHistoryEntry", doc="One step of an alarm's life.")
Command = row_model(t.commands, "Command", doc="A command and its acknowledgement (``expired``: never acknowledged).")


class DeadLetterSummary(RootModel[dict[str, int]]):
    """Dead letters counted by reason (reason → count)."""


class CommandSent(Out):
    cid: str = Field(description="the command id (follow it at GET /api/commands/{cid})")
    device_id: str = Field(description="the device it was sent to")
    name: str = Field(description="the command")
    status: str = Field(description="``sent``: published, not yet acknowledged")
    deadline_ms: int = Field(description="the device refuses it after this (ms since epoch)")


class RuleOut(Out):
    id: str = Field(description="the rule id")
    description: str = Field(description="what the rule is for")
    enabled: bool = Field(description="false: loaded but not evaluated")
    match: dict[str, Any] = Field(description="which devices and messages it looks at")
    when: dict[str, Any] = Field(description="the condition")
    actions: list[dict[str, Any]] = Field(description="what it does when the condition holds")


class ActiveRule(Out):
    rule: str = Field(description="the rule id")
    device: str = Field(description="the device it holds for")


class Rules(Out):
    file: str | None = Field(description="the rules file (CE_RULES_FILE); null: no rules engine")
    rules: list[RuleOut] = Field(description="the rules running, as in the file")
    active: list[ActiveRule] = Field(description="conditions holding now, per rule and device")


class RulesLoaded(Out):
    loaded: int = Field(description="rules now running")


# --- registry --------------------------------------------------------------------------------------------

Department = row_model(
    r.departments, "Department", only=("id", "name", "contact", "sla_hours"), doc="A department as created."
)
GridCell = row_model(
    r.grid_cells, "GridCell", only=("id", "name", "worker_name", "worker_contact"), doc="A grid cell as created."
)
Asset = row_model(r.assets, "Asset", doc="An asset of the registry.")


class ImportIssue(Out):
    line: int = Field(description="line of the CSV file (1: the header)")
    reason: str = Field(description="what is wrong")


class ImportReport(Out):
    rows: int = Field(description="data rows read")
    imported: int = Field(description="assets created or updated")
    rejected_file: bool = Field(description="nothing was imported (strict, or the header is wrong)")
    errors: list[ImportIssue] = Field(description="rows not imported and why")
    warnings: list[ImportIssue] = Field(description="rows imported that are worth a look")


# --- work orders -----------------------------------------------------------------------------------------

WorkOrderPhoto = row_model(
    w.work_order_photos,
    "WorkOrderPhoto",
    only=("id", "stage", "width", "height", "by", "created_ms"),
    doc="A before/after photo of a work order (the image itself: GET …/photos/{photo_id}).",
)
WorkOrderHistoryEntry = row_model(w.work_order_history, "WorkOrderHistoryEntry", doc="One step of a work order.")
WorkOrder = row_model(
    w.work_orders,
    "WorkOrder",
    doc="A work order with its photos and history.",
    overdue=(bool, Field(description="open and past its SLA (due_ms)")),
    photos=(list[WorkOrderPhoto], Field(description="photos, oldest first")),  # type: ignore[valid-type]
    history=(list[WorkOrderHistoryEntry], Field(description="what happened, oldest first")),  # type: ignore[valid-type]
)
PhotoAdded = row_model(
    w.work_order_photos, "PhotoAdded", only=("id", "stage", "width", "height"), doc="The photo as stored (JPEG)."
)


# --- gates: residents, faces, plates, visitors -------------------------------------------------------------

ResidentCreated = row_model(
    g.residents,
    "ResidentCreated",
    only=("id", "site_id", "unit", "name"),
    doc="A resident as created.",
    faces=(int, Field(description="face embeddings enrolled (none yet)")),
    consent=(bool, Field(description="consent to face recognition was recorded")),
)


class ConsentRecorded(Out):
    id: str = Field(description="the resident")
    consent: bool = Field(description="consent to face recognition is recorded (true)")


class ResidentDeleted(Out):
    id: str = Field(description="the resident")
    deleted: bool = Field(description="the resident record is gone (true)")
    revision: int = Field(description="gallery revision that removes their faces from the gates")
    log_entries_scrubbed: int = Field(description="logged messages their face data was removed from")


class ConsentWithdrawn(Out):
    id: str = Field(description="the resident")
    withdrawn: bool = Field(description="consent withdrawn (true); the record stays, the faces go")
    revision: int = Field(description="gallery revision that removes their faces from the gates")
    log_entries_scrubbed: int = Field(description="logged messages their face data was removed from")


Erasure = row_model(
    g.erasures,
    "Erasure",
    doc="A face-data erasure and the gates yet to confirm it.",
    gates=(int, Field(description="gates of the site")),
    pending_gates=(list[str], Field(description="gates that have not yet applied the erasure")),
)


class FacesAdded(Out):
    id: str = Field(description="the resident")
    faces: int = Field(description="face embeddings the resident now has")
    revision: int = Field(description="gallery revision the gates are brought to")


class PlateAdded(Out):
    site_id: str = Field(description="the site")
    plate: str = Field(description="the plate in its normal form")
    holder: str = Field(description="whose it is")
    kind: str = Field(description="resident / visitor / staff / service")
    revision: int = Field(description="allow-list revision the barriers are brought to")


class PlateRemoved(Out):
    plate: str = Field(description="the plate in its normal form")
    deleted: bool = Field(description="removed (true)")
    revision: int = Field(description="allow-list revision the barriers are brought to")


class VisitorAnswered(Out):
    request_id: str = Field(description="the visitor request")
    status: str = Field(description="approved or denied")
    command: str = Field(description="id of the command that tells the gate")


# --- parking ---------------------------------------------------------------------------------------------


class LiftStatus(Out):
    lift: str = Field(description="the lift")
    state: str = Field(description="idle / moving / handing_over / fault / maintenance / estop")
    floor: int = Field(description="floor it is at")
    position_mm: int | None = Field(None, description="position in the shaft, when the lift reports it")
    queue: int = Field(0, description="requests waiting")
    interlocks: dict[str, bool] = Field(default_factory=dict, description="name → closed (true is safe)")
    received_ms: int = Field(description="when the cloud received this status")


class TowerStatus(Out):
    device_id: str = Field(description="the parking tower")
    lifts: list[LiftStatus] = Field(description="the newest status of each lift, by lift")


# --- device identities -------------------------------------------------------------------------------------


class Claim(Out):
    token: str = Field(description="the single-use claim token, shown this once (only its hash is kept)")
    site_id: str = Field(description="the site the new device joins")
    kind: str | None = Field(description="the only kind of device it may create (null: any)")
    expires_ms: int = Field(description="unusable after this (ms since epoch)")


class MqttIdentity(Out):
    host: str = Field(description="broker host")
    port: int = Field(description="broker port")
    tls: bool = Field(description="connect with TLS (ca_pem is the CA)")
    username: str | None = Field(description="broker user (null: the broker takes anonymous devices)")
    password: str | None = Field(description="broker password, given this once (null: none needed)")


class Provisioned(Out):
    device_id: str = Field(description="the device's id")
    site_id: str = Field(description="its site")
    mqtt: MqttIdentity = Field(description="how it reaches the broker")
    ca_pem: str | None = Field(description="the broker's CA certificate (null: no TLS)")
    command_public_key: str = Field(description="key that signs its commands (base64)")
    document_public_key: str = Field(description="key that signs its config, gallery and allow-list documents (base64)")
    update_public_key: str = Field(description="key that signs its update bundles (base64)")
    config: dict[str, Any] = Field(description="initial configuration")


class SigningKeySet(Out):
    device_id: str = Field(description="the device")
    signing_key: str | None = Field(description="its own public key now registered (none: its messages go unsigned)")


class DeviceRevoked(Out):
    device_id: str = Field(description="the device")
    revoked: bool = Field(description="revoked (true)")
    broker: bool = Field(description="the broker was told too (its connection drops)")


class DeviceReinstated(Out):
    device_id: str = Field(description="the device")
    revoked: bool = Field(description="no longer revoked (false)")
    next: str = Field(description="what to do next")


class CredentialsRotating(Out):
    device_id: str = Field(description="the device")
    cid: str = Field(description="the set-credentials command")
    status: str = Field(description="``sent``: the broker switches when the device acknowledges")


# --- updates -----------------------------------------------------------------------------------------------

Bundle = row_model(u.update_bundles, "Bundle", drop=("path",), doc="An update bundle (where it is kept: not shown).")
RolloutSummary = row_model(u.rollouts, "RolloutSummary", doc="A rollout, without its devices.")
RolloutDevice = row_model(u.rollout_devices, "RolloutDevice", doc="One device of a rollout.")
Rollout = row_model(
    u.rollouts,
    "Rollout",
    doc="A rollout with each device's state.",
    counts=(dict[str, int], Field(description="devices per state")),
    devices=(list[RolloutDevice], Field(description="every device of the rollout, by id")),  # type: ignore[valid-type]
)
