"""One realistic example of every message type: used by the docs, the schema export and the tests."""

from __future__ import annotations

import base64
import struct

from protocol import messages as m
from protocol.envelope import Envelope, envelope
from protocol.topics import Channel, topic

SITE = "riverside"
TS = 1_795_000_000_000  # 2026-11-18T06:13:20Z
_EMB = base64.b64encode(struct.pack("<128f", *[(i % 7 - 3) / 10 for i in range(128)])).decode()
_CID = "01KAB3C4D5E6F7G8H9JKMNPQRS"
_REQ = "01KAB3C4D5E6F7G8H9JKMNPQRT"

EXAMPLES: dict[str, tuple[str, m.Body]] = {
    "health": (
        "gate-01",
        m.Health(
            uptime_s=86_400.5,
            agent_version="0.1.0",
            kind="gate",
            cpu_load=0.42,
            mem_rss_bytes=96_000_000,
            disk_free_bytes=12_000_000_000,
            outbox_depth={"alarm": 0, "event": 3, "telemetry": 120, "bulk": 0},
            outbox_bytes=48_000,
            shed={"telemetry": 0, "bulk": 0},
            last_publish_ts=TS - 1200,
            clock_offset_ms=-35,
        ),
    ),
    "telemetry": (
        "gate-01",
        m.TelemetryBatch(
            readings=[
                m.Reading(metric="cpu_temp", value=51.5, ts=TS - 2000, unit="C"),
                m.Reading(metric="door_open_s", value=3.0, ts=TS - 1000, unit="s", tags={"door": "a1"}),
            ]
        ),
    ),
    "state": ("gate-01", m.DeviceState(status="online", agent_version="0.1.0", kind="gate", since_ts=TS)),
    "event": (
        "gate-01",
        m.DeviceEvent(code="config.applied", message="config revision 7 applied", details={"revision": 7}),
    ),
    "gate.decision": (
        "gate-01",
        m.GateDecision(
            door="a1",
            decision="open",
            reason="resident_match",
            method="face",
            subject_id="res-1042",
            score=0.81,
            temperature_c=36.6,
            liveness=0.97,
            latency_ms=14.2,
        ),
    ),
    "thermal.screening": (
        "gate-01",
        m.TemperatureScreening(door="a1", temperature_c=38.2, threshold_c=37.3, fever=True, ambient_c=21.0),
    ),
    "relay.state": (
        "gate-01",
        m.RelayState(relay="lock-a1", state="on", reason="resident_match", pulse_s=3.0, door_contact="closed"),
    ),
    "visitor.request": (
        "gate-01",
        m.VisitorRequest(
            request_id=_REQ,
            door="a1",
            unit="12-0304",
            visitor_name="Courier",
            snapshot_ref="snap-0001",
            expires_ts=TS + 120_000,
        ),
    ),
    "visitor.answer": (
        "gate-01",
        m.VisitorAnswer(request_id=_REQ, approved=True, by="res-1042", valid_until_ts=TS + 600_000),
    ),
    "plate.read": (
        "barrier-01",
        m.PlateRead(lane="in-1", plate="ABC1234", confidence=0.93, decision="open", subject_id="res-1042"),
    ),
    "media.snapshot": (
        "gate-01",
        m.MediaSnapshot(
            ref="snap-0001", content_type="image/jpeg", data_b64="/9j/4AAQSkZJRgABAQ==", purpose="visitor_request"
        ),
    ),
    "lift.status": (
        "lift-01",
        m.LiftStatus(
            lift="l1",
            state="moving",
            floor=3,
            position_mm=8_400,
            queue=2,
            interlocks={"door": True, "over_height": True, "person_in_bay": True},
        ),
    ),
    "lift.request": (
        "lift-01",
        m.LiftRequest(
            request_id=_REQ,
            kind="retrieve",
            by="plate",
            lift="l1",
            subject_id="res-1042",
            bay="l1-f3-b5",
            eta_s=74.0,
        ),
    ),
    "lift.result": (
        "lift-01",
        m.LiftResult(request_id=_REQ, kind="retrieve", ok=True, duration_s=71.3, bay="l1-f3-b5"),
    ),
    "elevator.status": (
        "elev-01",
        m.ElevatorStatus(
            car="c1", floor=7, direction="up", door="closed", state="normal", load_kg=240.0, occupied=True
        ),
    ),
    "elevator.fault": (
        "elev-01",
        m.ElevatorFault(
            car="c1",
            code="door_stuck",
            severity="critical",
            active=True,
            entrapment=True,
            floor=7,
            description="car stopped between floors with door closed and occupant detected",
        ),
    ),
    "manhole.reading": (
        "mh-000123",
        m.ManholeReading(
            tilt_deg=1.2, battery_v=3.61, water_level_cm=35.0, gas_lel=0.0, temperature_c=14.5, rssi_dbm=-97.0
        ),
    ),
    "manhole.alarm": ("mh-000123", m.ManholeAlarm(kind="tilt", active=True, value=12.5, threshold=5.0)),
    "alarm.raise": (
        "gate-01",
        m.AlarmRaise(
            key="door_held:a1",
            code="door_held",
            severity="major",
            message="door a1 held open 45 s",
            details={"door": "a1", "open_s": 45},
        ),
    ),
    "alarm.clear": ("gate-01", m.AlarmClear(key="door_held:a1", code="door_held", message="door closed")),
    "command": (
        "gate-01",
        m.Command(
            cid=_CID,
            name="ping",
            args={},
            deadline_ms=TS + 60_000,
            sig="3gQxH0Y4n7wJw3n1m0k9iFZQe3uU7gQ2k3m1XyqzP1dW0cT9l8vU6sR5p4o3n2m1l0k9j8i7h6g5f4e3d2c1bA",
        ),
    ),
    "command.ack": ("gate-01", m.CommandAck(cid=_CID, name="ping", status="ok", result={"pong": TS})),
    "config": ("gate-01", m.ConfigDocument(revision=7, doc={"gate": {"fever_threshold_c": 37.3}})),
    "gallery.delta": (
        "gate-01",
        m.GalleryDelta(
            revision=42,
            base_revision=41,
            upserts=[m.GalleryEntry(resident_id="res-1042", unit="12-0304", embedding_b64=_EMB)],
            deletes=["res-0999"],
        ),
    ),
    "allowlist.delta": (
        "barrier-01",
        m.AllowlistDelta(
            revision=12,
            base_revision=11,
            upserts=[
                m.PlateEntry(plate="京A12345", holder="res-1042"),
                m.PlateEntry(
                    plate="沪AD12345",
                    holder="res-1203",
                    kind="visitor",
                    valid_from_ts=TS,
                    valid_until_ts=TS + 86_400_000,
                ),
            ],
            deletes=["粤B0000学"],
        ),
    ),
    "update.status": (
        "gate-01",
        m.UpdateStatus(rollout="ro-0007", version="0.2.0", state="healthy", running="0.2.0"),
    ),
}

_CHANNEL_FOR_TYPE = {
    "lift.status": Channel.EVT,
    "elevator.status": Channel.EVT,
}


def example(type_name: str, seq: int = 1) -> tuple[str, Envelope]:
    """Return (topic, envelope) for the example of ``type_name``."""
    dev, body = EXAMPLES[type_name]
    channel = _CHANNEL_FOR_TYPE.get(type_name) or next(iter(body.CHANNELS))
    name = body.name if isinstance(body, m.Command) else None
    env = envelope(body, dev=dev, seq=seq, ts=TS, id=f"01KAB3C4D5E6F7G8H9JKMN{seq:04d}")
    return topic(SITE, dev, channel, name), env
