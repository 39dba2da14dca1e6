"""Reading what community sensors reported (for the console pages; no SQL in views)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from cloud.alarms import tables as alarm_tables
from cloud.auth.scope import alarm_filter
from cloud.auth.service import User
from cloud.db import schema as t
from cloud.gate import tables as g

KINDS = ("gas", "perimeter", "throwing", "water")


def community_devices(conn: Connection) -> dict[str, str]:
    """Gas, perimeter, throwing and water gateways: id → kind."""
    c = t.devices.c
    return {r.id: r.kind for r in conn.execute(select(c.id, c.kind).where(c.kind.in_(KINDS)))}


def latest_metrics(conn: Connection, devices: Sequence[str], prefix: str) -> list[dict[str, Any]]:
    """The newest value of every metric starting with ``prefix`` on ``devices``."""
    c = t.telemetry.c
    newest = (
        select(c.device_id, c.metric, func.max(c.ts).label("ts"))
        .where(c.device_id.in_(list(devices)), c.metric.startswith(prefix, autoescape=True))
        .group_by(c.device_id, c.metric)
        .subquery()
    )
    q = select(c.device_id, c.metric, c.ts, c.value).join(
        newest, (c.device_id == newest.c.device_id) & (c.metric == newest.c.metric) & (c.ts == newest.c.ts)
    )
    return [dict(r._mapping) for r in conn.execute(q)]


def alarms_of(conn: Connection, user: User, devices: Sequence[str], limit: int = 500) -> list[dict[str, Any]]:
    """These devices' alarms this user may see, newest first."""
    c = alarm_tables.alarms.c
    q = select(alarm_tables.alarms).where(c.device_id.in_(list(devices)), alarm_filter(user))
    return [dict(r._mapping) for r in conn.execute(q.order_by(c.raised_ms.desc()).limit(limit))]


def stored_pictures(conn: Connection, refs: set[str]) -> set[str]:
    """``device/ref`` of the pictures among ``refs`` that have arrived."""
    if not refs:
        return set()
    mc = g.media.c
    return {f"{d}/{r}" for d, r in conn.execute(select(mc.device_id, mc.ref).where(mc.ref.in_(refs)))}
