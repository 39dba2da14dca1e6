"""Reading alarms (for the API and the console pages; no SQL in views)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Select, func, select

from cloud.alarms import tables as alarm_tables
from cloud.auth.scope import alarm_filter
from cloud.auth.service import User


def open_alarms(engine: Engine, user: User, limit: int = 50) -> list[dict[str, Any]]:
    """The open alarms this user may see, newest first."""
    c = alarm_tables.alarms.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(alarm_tables.alarms)
            .where(c.state != "cleared", alarm_filter(user))
            .order_by(c.raised_ms.desc(), c.id.desc())
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]


def alarms(user: User, state: str | None = None, device: str | None = None) -> Select[Any]:
    """Alarms this user may see, newest first; ``open`` = active or acknowledged."""
    c = alarm_tables.alarms.c
    q = select(alarm_tables.alarms).where(alarm_filter(user)).order_by(c.raised_ms.desc(), c.id.desc())
    if state == "open":
        q = q.where(c.state != "cleared")
    elif state:
        q = q.where(c.state == state)
    if device:
        q = q.where(c.device_id == device)
    return q


def alarm(conn: Connection, user: User, alarm_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        select(alarm_tables.alarms).where(alarm_tables.alarms.c.id == alarm_id, alarm_filter(user))
    ).first()
    return None if row is None else dict(row._mapping)


def history(conn: Connection, alarm_id: int) -> list[dict[str, Any]]:
    h = alarm_tables.alarm_history.c
    rows = conn.execute(select(alarm_tables.alarm_history).where(h.alarm_id == alarm_id).order_by(h.at_ms, h.id))
    return [dict(r._mapping) for r in rows]


def open_by_severity(conn: Connection, user: User) -> dict[str, int]:
    c = alarm_tables.alarms.c
    q = select(c.severity, func.count()).where(c.state != "cleared", alarm_filter(user)).group_by(c.severity)
    return {sev: int(n) for sev, n in conn.execute(q)}


def with_key_prefix(user: User, prefix: str, limit: int = 50) -> Select[Any]:
    """Alarms this user may see whose key starts with ``prefix`` (``elevator.``), newest first."""
    c = alarm_tables.alarms.c
    q = select(alarm_tables.alarms).where(c.key.startswith(prefix, autoescape=True), alarm_filter(user))
    return q.order_by(c.raised_ms.desc(), c.id.desc()).limit(limit)
