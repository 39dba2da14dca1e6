"""Manhole-cover nodes: readings to telemetry; their own alarms (tilt, water, gas…) through the lifecycle."""

from __future__ import annotations

from cloud.ingest.routing import Context, Handler
from protocol import messages as m

METRICS = ("tilt_deg", "battery_v", "water_level_cm", "gas_lel", "temperature_c", "rssi_dbm")
#: kinds that endanger people at once
CRITICAL = ("gas", "overturn", "flood")


def on_reading(ctx: Context, b: m.ManholeReading) -> None:
    for name in METRICS:
        v = getattr(b, name)
        if v is not None:
            ctx.reading(name, v)


def on_alarm(ctx: Context, b: m.ManholeAlarm) -> None:
    key = f"manhole.{b.kind}"
    if not b.active:
        ctx.clear_alarm(key)
        return
    ctx.raise_alarm(
        key,
        b.kind,
        "critical" if b.kind in CRITICAL else "major",
        f"{b.kind}: {b.value:g} (threshold {b.threshold:g})",
        {"value": b.value, "threshold": b.threshold},
    )


HANDLERS: dict[type, Handler] = {m.ManholeReading: on_reading, m.ManholeAlarm: on_alarm}
