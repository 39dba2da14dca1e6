"""Body models for every message the product sends. One class per ``type``.

Each body names its ``TYPE`` (the envelope's ``type``), the ``CHANNELS`` it may travel on and the outbox
``LANE`` it belongs to. Bodies are frozen; unknown fields are refused.
"""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, NotRequired, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator, with_config
from typing_extensions import TypedDict  # pydantic needs its TypedDict before Python 3.12

from protocol.limits import (
    EMBEDDING_DIM,
    INT_MAX,
    INT_MIN,
    LINE_PATTERN,
    MAX_ARGS_BYTES,
    MAX_GALLERY_ENTRIES,
    MAX_ID_LEN,
    MAX_NAME_LEN,
    MAX_READINGS_PER_BATCH,
    MAX_TEXT_LEN,
    TEXT_PATTERN,
    check_json,
    strict_base64,
)
from protocol.topics import Channel


class Lane(StrEnum):
    """Outbox lanes, highest priority first."""

    ALARM = "alarm"
    EVENT = "event"
    TELEMETRY = "telemetry"
    BULK = "bulk"


LANE_PRIORITY: dict[Lane, int] = {Lane.ALARM: 0, Lane.EVENT: 1, Lane.TELEMETRY: 2, Lane.BULK: 3}

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LEN, pattern=r"^[a-z][a-z0-9_.-]*$")]
#: free text: any printable character, line breaks and tabs; never NUL or another control character
#: (PostgreSQL refuses NUL in text, and a control character has no business on an operator's screen)
Text = Annotated[str, Field(max_length=MAX_TEXT_LEN, pattern=TEXT_PATTERN)]
Ms = Annotated[int, Field(ge=0, le=2**53)]
#: integers both databases store (BIGINT: signed 64-bit)
Int = Annotated[int, Field(ge=INT_MIN, le=INT_MAX)]
Count = Annotated[int, Field(ge=0, le=INT_MAX)]

# short one-line strings: printable characters only
Line16 = Annotated[str, Field(max_length=16, pattern=LINE_PATTERN)]
Line40 = Annotated[str, Field(max_length=40, pattern=LINE_PATTERN)]
Line64 = Annotated[str, Field(max_length=MAX_NAME_LEN, pattern=LINE_PATTERN)]
Word16 = Annotated[str, Field(min_length=1, max_length=16, pattern=LINE_PATTERN)]
Key = Annotated[str, Field(min_length=1, max_length=128, pattern=LINE_PATTERN)]
PlateText = Annotated[str, Field(min_length=7, max_length=16, pattern=LINE_PATTERN)]
Ulid = Annotated[str, Field(pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$")]
#: an outbox lane's name (short: the cloud stores its depth as the reading ``outbox_<lane>``)
LaneName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_.-]*$")]
#: an elevator car (short: the cloud keys its faults ``elevator.<car>.<code>`` in 128 characters)
CarId = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Severity = Literal["critical", "major", "minor", "warning", "info"]
#: what a device's picture may be for (the cloud keeps each for its own retention period)
SnapshotPurpose = Literal["visitor_request", "perimeter", "throwing"]
SNAPSHOT_PURPOSES: tuple[str, ...] = get_args(SnapshotPurpose)
IMAGE_MAGIC: dict[str, bytes] = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}


class Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
    TYPE: ClassVar[str]
    CHANNELS: ClassVar[frozenset[Channel]]
    LANE: ClassVar[Lane]


def _small_json(value: dict[str, Any], what: str) -> dict[str, Any]:
    """A free-form object (details, args, result, doc): only what every store keeps as it is (see
    :func:`protocol.limits.check_json`), and small."""
    check_json(value, what)
    if len(orjson.dumps(value)) > MAX_ARGS_BYTES:
        raise ValueError(f"{what} larger than {MAX_ARGS_BYTES} bytes")
    return value


# --- device health and telemetry ------------------------------------------------------------------


class Health(Body):
    """Heartbeat of a gateway agent or board: how it is doing and how much it has buffered."""

    TYPE = "health"
    CHANNELS = frozenset({Channel.TELE})
    LANE = Lane.TELEMETRY
    uptime_s: float = Field(ge=0)
    agent_version: Line64
    kind: Name | None = Field(default=None, description="gate, barrier, parking_lift, elevator, manhole, …")
    cpu_load: float | None = Field(default=None, ge=0, description="1-minute load average")
    mem_rss_bytes: Count | None = None
    disk_free_bytes: Count | None = None
    outbox_depth: dict[LaneName, Count] = Field(default_factory=dict, max_length=16)
    outbox_bytes: Count | None = None
    shed: dict[LaneName, Count] = Field(default_factory=dict, max_length=16)
    refused: dict[LaneName, Count] = Field(default_factory=dict, max_length=16)
    last_publish_ts: Ms | None = None
    storage: Literal["ok", "full"] | None = Field(
        default=None, description="full: the disk has no room; telemetry is refused, alarms and events are kept"
    )
    clock_offset_ms: Int | None = Field(default=None, description="device clock minus broker/NTP time, if known")
    battery_v: float | None = Field(default=None, ge=0, le=60)
    rssi_dbm: float | None = Field(default=None, ge=-150, le=0)


@with_config(ConfigDict(extra="forbid", strict=True, allow_inf_nan=False))
class Reading(TypedDict):
    """One reading: a plain record (a batch carries hundreds, and a model object each cost more to validate than
    everything else the cloud does with them); validated as part of its :class:`TelemetryBatch`."""

    metric: Name
    value: float
    ts: Ms
    unit: NotRequired[Line16 | None]
    tags: NotRequired[Annotated[dict[Name, Line64] | None, Field(max_length=8)]]


class TelemetryBatch(Body):
    """Many readings per message: the unit of telemetry on the wire."""

    TYPE = "telemetry"
    CHANNELS = frozenset({Channel.TELE})
    LANE = Lane.TELEMETRY
    readings: list[Reading] = Field(min_length=1, max_length=MAX_READINGS_PER_BATCH)


class DeviceState(Body):
    """Retained presence on ``state``: ``online`` on connect, ``offline`` as the last will."""

    TYPE = "state"
    CHANNELS = frozenset({Channel.STATE})
    LANE = Lane.EVENT
    status: Literal["online", "offline"]
    agent_version: Line64 | None = None
    kind: Name | None = None
    since_ts: Ms | None = None


class DeviceEvent(Body):
    """A generic device event: agent lifecycle (started, stopping, config applied), diagnostics."""

    TYPE = "event"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.EVENT
    code: Name
    message: Text = ""
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("details")
    @classmethod
    def _details_small(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _small_json(v, "details")


# --- gate and barrier ----------------------------------------------------------------------------

Method = Literal["face", "plate", "card", "visitor", "remote", "fire", "manual"]


class GateDecision(Body):
    """What a gate decided for one approach, and why; ``latency_ms`` is frame to decision."""

    TYPE = "gate.decision"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.EVENT
    door: Id
    decision: Literal["open", "deny", "visitor", "hold"]
    reason: Name = Field(description="resident_match, fever, spoof, unknown_face, visitor_approved, …")
    method: Method
    subject_id: Id | None = None
    score: float | None = Field(default=None, ge=-1, le=1)
    temperature_c: float | None = Field(default=None, ge=20, le=45)
    liveness: float | None = Field(default=None, ge=0, le=1)
    latency_ms: float | None = Field(default=None, ge=0)


class TemperatureScreening(Body):
    TYPE = "thermal.screening"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.EVENT
    door: Id
    temperature_c: float = Field(ge=20, le=45)
    threshold_c: float = Field(ge=34, le=39)
    fever: bool
    subject_id: Id | None = None
    ambient_c: float | None = Field(default=None, ge=-40, le=70)


class RelayState(Body):
    """A relay or lock changed state; every actuation carries its reason."""

    TYPE = "relay.state"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.EVENT
    relay: Id
    state: Literal["on", "off"]
    reason: Name
    pulse_s: float | None = Field(default=None, ge=0, le=3600)
    door_contact: Literal["open", "closed"] | None = None


class VisitorRequest(Body):
    TYPE = "visitor.request"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.EVENT
    request_id: Ulid
    door: Id
    unit: Word16
    visitor_name: Line64 | None = None
    snapshot_ref: Id | None = None
    expires_ts: Ms


class VisitorAnswer(Body):
    TYPE = "visitor.answer"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.EVENT
    request_id: Ulid
    approved: bool
    by: Id
    valid_until_ts: Ms | None = None


class PlateRead(Body):
    TYPE = "plate.read"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.EVENT
    lane: Id
    plate: Word16
    confidence: float = Field(ge=0, le=1)
    decision: Literal["open", "deny", "visitor"]
    subject_id: Id | None = None


class MediaSnapshot(Body):
    """A still image (visitor snapshot, before/after photo). Bulk lane: first to be shed."""

    TYPE = "media.snapshot"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.BULK
    ref: Id
    content_type: Literal["image/jpeg", "image/png"]
    data_b64: Annotated[str, Field(min_length=4, max_length=200_000)] = Field(
        description="the image, standard base64 with padding; its first bytes must match content_type"
    )
    purpose: SnapshotPurpose = Field(description="what the picture is for; the cloud decides how long it keeps it")

    @field_validator("data_b64")
    @classmethod
    def _strict_base64(cls, v: str) -> str:
        strict_base64(v)
        return v

    @model_validator(mode="after")
    def _image_matches_type(self) -> MediaSnapshot:
        head = base64.b64decode(self.data_b64[:16])
        if not head.startswith(IMAGE_MAGIC[self.content_type]):
            raise ValueError(f"data_b64 does not start like a {self.content_type} file")
        return self

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.data_b64, validate=True)


# --- parking lift --------------------------------------------------------------------------------

LiftState = Literal["idle", "moving", "handing_over", "fault", "maintenance", "estop"]


class LiftStatus(Body):
    TYPE = "lift.status"
    CHANNELS = frozenset({Channel.TELE, Channel.EVT})
    LANE = Lane.EVENT
    lift: Id
    state: LiftState
    floor: int = Field(ge=-10, le=200)
    position_mm: Int | None = None
    queue: int = Field(default=0, ge=0, le=10_000)
    interlocks: dict[Name, bool] = Field(
        default_factory=dict, max_length=64, description="name → closed (true is safe)"
    )


class LiftRequest(Body):
    TYPE = "lift.request"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.EVENT
    request_id: Ulid
    kind: Literal["store", "retrieve"]
    by: Literal["face", "plate", "ticket"]
    lift: Id | None = None
    subject_id: Id | None = None
    bay: Id | None = None
    eta_s: float | None = Field(default=None, ge=0)


class LiftResult(Body):
    TYPE = "lift.result"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.EVENT
    request_id: Ulid
    kind: Literal["store", "retrieve"]
    ok: bool
    duration_s: float = Field(ge=0)
    bay: Id | None = None
    reason: Name | None = None


# --- elevator ------------------------------------------------------------------------------------


class ElevatorStatus(Body):
    TYPE = "elevator.status"
    CHANNELS = frozenset({Channel.TELE, Channel.EVT})
    LANE = Lane.EVENT
    car: CarId
    floor: int = Field(ge=-10, le=300)
    direction: Literal["up", "down", "idle"]
    door: Literal["open", "closed", "opening", "closing"]
    state: Literal["normal", "fault", "maintenance", "out_of_service", "fire"]
    load_kg: float | None = Field(default=None, ge=0)
    occupied: bool | None = None


class ElevatorFault(Body):
    TYPE = "elevator.fault"
    CHANNELS = frozenset({Channel.ALM})
    LANE = Lane.ALARM
    car: CarId
    code: Name
    severity: Severity
    active: bool
    entrapment: bool = False
    floor: int | None = Field(default=None, ge=-10, le=300)
    description: Text = ""


# --- manhole node --------------------------------------------------------------------------------


class ManholeReading(Body):
    TYPE = "manhole.reading"
    CHANNELS = frozenset({Channel.TELE})
    LANE = Lane.TELEMETRY
    tilt_deg: float = Field(ge=0, le=180)
    battery_v: float = Field(ge=0, le=15)
    water_level_cm: float | None = Field(default=None, ge=0, le=2000)
    gas_lel: float | None = Field(default=None, ge=0, le=100)
    temperature_c: float | None = Field(default=None, ge=-50, le=120)
    rssi_dbm: float | None = Field(default=None, ge=-150, le=0)


class ManholeAlarm(Body):
    TYPE = "manhole.alarm"
    CHANNELS = frozenset({Channel.ALM})
    LANE = Lane.ALARM
    kind: Literal["tilt", "displacement", "overturn", "flood", "gas", "battery_low", "tamper"]
    active: bool
    value: float
    threshold: float


# --- generic alarms ------------------------------------------------------------------------------


class AlarmRaise(Body):
    """A generic alarm. ``key`` identifies one alarm condition on the device, so raise/clear pair up."""

    TYPE = "alarm.raise"
    CHANNELS = frozenset({Channel.ALM})
    LANE = Lane.ALARM
    key: Key
    code: Name
    severity: Severity
    message: Text
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("details")
    @classmethod
    def _details_small(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _small_json(v, "details")


class AlarmClear(Body):
    TYPE = "alarm.clear"
    CHANNELS = frozenset({Channel.ALM})
    LANE = Lane.ALARM
    key: Key
    code: Name
    message: Text = ""


# --- commands, config, gallery -------------------------------------------------------------------


class Command(Body):
    """Cloud → device on ``cmd/{name}``: signed (Ed25519) over id, device, name, args and deadline."""

    TYPE = "command"
    CHANNELS = frozenset({Channel.CMD})
    LANE = Lane.EVENT
    cid: Ulid
    name: Name
    args: dict[str, Any] = Field(default_factory=dict)
    deadline_ms: Ms
    issued_ms: Ms | None = Field(default=None, description="the cloud's clock when it signed (signed too)")
    sig: Annotated[str, Field(min_length=1, max_length=200, pattern=LINE_PATTERN)]

    @field_validator("args")
    @classmethod
    def _args_small(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _small_json(v, "args")


class CommandAck(Body):
    TYPE = "command.ack"
    CHANNELS = frozenset({Channel.ACK})
    LANE = Lane.EVENT
    cid: Ulid
    name: Name
    status: Literal["accepted", "ok", "error", "refused"]
    reason: Text | None = None
    result: dict[str, Any] | None = None

    @field_validator("result")
    @classmethod
    def _result_small(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else _small_json(v, "result")


#: a gateway with an empty copy asks for its gallery / allow-list with a fresh random nonce and takes only a
#: snapshot that carries it back (signed): an old signed snapshot replayed to a wiped or re-flashed gateway is refused
SYNC_NONCE_PATTERN = r"^[A-Za-z0-9_-]{8,32}$"
SyncNonce = Annotated[str, Field(pattern=SYNC_NONCE_PATTERN)]
#: the signature a cloud → device document carries (base64url, no padding); None: unsigned (and refused)
DocSig = Annotated[str | None, Field(max_length=200, pattern=r"^[A-Za-z0-9_-]*$")]


class ConfigDocument(Body):
    """Retained desired config on ``cfg``, signed with the document key; the device applies a newer revision
    atomically or reports why not."""

    TYPE = "config"
    CHANNELS = frozenset({Channel.CFG})
    LANE = Lane.EVENT
    revision: Count
    doc: dict[str, Any]
    sig: DocSig = Field(default=None, description="Ed25519 by the cloud's document key (protocol.signing)")

    @field_validator("doc")
    @classmethod
    def _doc_small(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _small_json(v, "doc")


class GalleryEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
    resident_id: Id
    unit: Line16 | None = None
    embedding_b64: str = Field(description=f"{EMBEDDING_DIM} little-endian float32, base64")

    @field_validator("embedding_b64")
    @classmethod
    def _embedding_size(cls, v: str) -> str:
        if len(strict_base64(v)) != EMBEDDING_DIM * 4:
            raise ValueError(f"embedding must be {EMBEDDING_DIM} float32 ({EMBEDDING_DIM * 4} bytes)")
        return v


class GalleryDelta(Body):
    """Resident face gallery changes since ``base_revision`` (None: a full snapshot)."""

    TYPE = "gallery.delta"
    CHANNELS = frozenset({Channel.GALLERY})
    LANE = Lane.EVENT
    revision: Count
    base_revision: Count | None = None
    upserts: list[GalleryEntry] = Field(default_factory=list, max_length=MAX_GALLERY_ENTRIES)
    deletes: list[Id] = Field(default_factory=list, max_length=MAX_GALLERY_ENTRIES)
    nonce: SyncNonce | None = Field(
        default=None, description="the nonce of the request this answers (an empty copy asks with one)"
    )
    sig: DocSig = Field(default=None, description="Ed25519 by the cloud's document key (protocol.signing)")


class PlateEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
    plate: PlateText = Field(description="normalised (protocol.plates)")
    holder: Id
    kind: Literal["resident", "visitor", "staff", "service"] = "resident"
    valid_from_ts: Ms | None = None
    valid_until_ts: Ms | None = None


class AllowlistDelta(Body):
    """Vehicle allow-list changes for barriers since ``base_revision`` (None: a full snapshot)."""

    TYPE = "allowlist.delta"
    CHANNELS = frozenset({Channel.GALLERY})
    LANE = Lane.EVENT
    revision: Count
    base_revision: Count | None = None
    upserts: list[PlateEntry] = Field(default_factory=list, max_length=MAX_GALLERY_ENTRIES)
    deletes: list[PlateText] = Field(default_factory=list, max_length=MAX_GALLERY_ENTRIES)
    nonce: SyncNonce | None = Field(
        default=None, description="the nonce of the request this answers (an empty copy asks with one)"
    )
    sig: DocSig = Field(default=None, description="Ed25519 by the cloud's document key (protocol.signing)")


# --- updates -------------------------------------------------------------------------------------


class UpdateStatus(Body):
    """Where a device is with an update from a rollout (one message per step)."""

    TYPE = "update.status"
    CHANNELS = frozenset({Channel.EVT})
    LANE = Lane.EVENT
    rollout: Id
    version: Line40
    state: Literal["downloading", "installed", "activated", "healthy", "rolled_back", "refused", "failed"]
    reason: Name | None = None
    detail: Text = ""
    running: Line40 | None = Field(default=None, description="the version running now")


BODIES: tuple[type[Body], ...] = (
    Health,
    TelemetryBatch,
    DeviceState,
    DeviceEvent,
    GateDecision,
    TemperatureScreening,
    RelayState,
    VisitorRequest,
    VisitorAnswer,
    PlateRead,
    MediaSnapshot,
    LiftStatus,
    LiftRequest,
    LiftResult,
    ElevatorStatus,
    ElevatorFault,
    ManholeReading,
    ManholeAlarm,
    AlarmRaise,
    AlarmClear,
    Command,
    CommandAck,
    ConfigDocument,
    GalleryDelta,
    AllowlistDelta,
    UpdateStatus,
)
BODY_BY_TYPE: dict[str, type[Body]] = {b.TYPE: b for b in BODIES}
