"""What every device reports about itself: telemetry, health, online state, command acknowledgements."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from cloud.db import schema as t
from cloud.events import CommandAcked, DeviceStatus
from cloud.ingest.routing import Context, Handler, LogBody
from protocol import messages as m

HEALTH_METRICS = ("uptime_s", "cpu_load", "mem_rss_bytes", "disk_free_bytes", "outbox_bytes", "battery_v", "rssi_dbm")


def on_telemetry(ctx: Context, b: m.TelemetryBatch) -> None:
    dev, mid = ctx.device, ctx.env.id
    ctx.readings.extend([(dev, r["metric"], r["ts"], r["value"], r.get("unit"), mid) for r in b.readings])


def on_health(ctx: Context, b: m.Health) -> None:
    for name in HEALTH_METRICS:
        v = getattr(b, name)
        if v is not None:
            ctx.reading(name, v)
    for lane, depth in b.outbox_depth.items():
        ctx.reading(f"outbox_{lane}", depth)
    ctx.conn.execute(
        update(t.devices)
        .where(t.devices.c.id == ctx.device)
        .values(
            health=b.model_dump(mode="json", exclude_none=True),
            health_ms=ctx.received_ms,
            agent_version=b.agent_version,
        )
    )


def on_state(ctx: Context, b: m.DeviceState) -> None:
    vals: dict[str, Any] = {"status": b.status}
    if b.agent_version:
        vals["agent_version"] = b.agent_version
    # a revoked device stays revoked whatever it (or its last will) says: only an admin reinstates it
    devs = t.devices.c
    ctx.conn.execute(update(t.devices).where(devs.id == ctx.device, devs.status != "revoked").values(**vals))
    ctx.events.append(DeviceStatus(ctx.device, b.status, ctx.site))


def on_ack(ctx: Context, b: m.CommandAck) -> None:
    ctx.conn.execute(
        update(t.commands)
        .where(t.commands.c.cid == b.cid, t.commands.c.device_id == ctx.device)
        .values(status=b.status, reason=b.reason, result=b.result, acked_ms=ctx.received_ms)
    )
    ctx.events.append(CommandAcked(ctx.device, b.cid, b.status))


HANDLERS: dict[type, Handler] = {
    m.TelemetryBatch: on_telemetry,
    m.Health: on_health,
    m.DeviceState: on_state,
    m.CommandAck: on_ack,
}
#: a telemetry batch's readings go to the telemetry table; the log keeps how many there were
LOG_BODIES: dict[type, LogBody] = {m.TelemetryBatch: lambda b: {"readings": len(b.readings)}}
