"""The device alarm channel: a device raises and clears its own alarms."""

from __future__ import annotations

from cloud.ingest.routing import Context, Handler
from protocol import messages as m


def on_raise(ctx: Context, b: m.AlarmRaise) -> None:
    ctx.raise_alarm(b.key, b.code, b.severity, b.message, b.details)


def on_clear(ctx: Context, b: m.AlarmClear) -> None:
    ctx.clear_alarm(b.key)


HANDLERS: dict[type, Handler] = {m.AlarmRaise: on_raise, m.AlarmClear: on_clear}
